"""Multi-node jobs on SSH host groups: one agent per host, one job row.

``--on ssh:h1,h2`` (registered hosts, ssh aliases or destinations) starts the same job on
every host, rank 0 on the first. Each agent's environment carries RUNCTL_NODE_RANK,
RUNCTL_NUM_NODES, RUNCTL_NODE_IPS, MASTER_ADDR (rank 0's address), MASTER_PORT, and, for
one process per node, RANK / WORLD_SIZE / NODE_RANK / NNODES, so ``torchrun --nnodes
$RUNCTL_NUM_NODES --node-rank $RUNCTL_NODE_RANK --master-addr $MASTER_ADDR --master-port
$MASTER_PORT`` and plain ``torch.distributed.init_process_group("gloo")`` work unchanged.

A node's address is the first one ``hostname -I`` prints on it (the address other nodes
reach it at, on a flat cluster network). The job row is rank 0's (its job dir gives `logs`,
`status`); ``spec["nodes"]`` lists every rank's host and job dir: `logs --node N` reads
another rank, `wait` waits for all ranks (the job fails if any rank fails), `cancel` cancels
all of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from runctl.core import agent
from runctl.core.sync import LocalTree
from runctl.core.targets import Target, instance_of_job
from runctl.errors import TransportError, UsageError
from runctl.models import Instance, Job, SyncStats
from runctl.runtime import Runtime

MASTER_PORT_BASE = 29500
Progress = Callable[[str], None]


def node_hosts(instance: Instance) -> list[str]:
    return [str(n) for n in instance.extra.get("nodes") or []]


def master_port(job_id: str) -> int:
    """A port derived from the job id, so concurrent groups rarely collide."""
    return MASTER_PORT_BASE + int(hashlib.sha256(job_id.encode()).hexdigest(), 16) % 1000


def node_env(rank: int, ips: list[str], port: int) -> dict[str, str]:
    count = str(len(ips))
    return {
        "RUNCTL_NODE_RANK": str(rank), "RUNCTL_NUM_NODES": count,
        "RUNCTL_NODE_IPS": ",".join(ips), "MASTER_ADDR": ips[0], "MASTER_PORT": str(port),
        "NODE_RANK": str(rank), "NNODES": count, "RANK": str(rank), "WORLD_SIZE": count,
        # torchrun reads PET_<OPTION> as its option defaults: a bare `torchrun script.py`
        # then joins the other nodes (one agent per node, static rendezvous on rank 0).
        "PET_NNODES": count, "PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": ips[0],
        "PET_MASTER_PORT": str(port),
    }  # fmt: skip


def _address(target: Target) -> str:
    transport = target.provider.connect(target.instance)
    done = transport.run(["hostname", "-I"], timeout=30)
    words = done.stdout.decode(errors="replace").split()
    if done.returncode != 0 or not words:
        raise TransportError(f"cannot learn the address of {target.instance.name}",
                             hint="`hostname -I` must print it on the host")  # fmt: skip
    return words[0]


def _rebase(value: str, old: str, new: str) -> str:
    return new + value[len(old) :] if old != new and value.startswith(old) else value


StartFn = Callable[..., tuple[SyncStats | None, dict[str, Any]]]


def start_group(
    runtime: Runtime,
    instance: Instance,
    request: Any,
    spec: dict[str, Any],
    tree: LocalTree | None,
    code_dir: str,
    progress: Progress,
    start: StartFn,
) -> tuple[SyncStats | None, dict[str, Any]]:
    """Start one agent per host of the group; fills ``spec["nodes"]``; rank 0's answer."""
    hosts = node_hosts(instance)
    targets = [instance_of_job(runtime, instance.provider, host) for host in hosts]
    ips = [_address(t) for t in targets]
    port = master_port(spec["job_id"])
    base0 = instance.remote_dir
    nodes: list[dict[str, Any]] = []
    first: tuple[SyncStats | None, dict[str, Any]] | None = None
    try:
        for rank, target in enumerate(targets):
            member = target.instance
            node_spec = dict(spec)
            for key in ("workdir", "checkpoint_dir", "output_dir", "code_dir"):
                if node_spec.get(key):
                    node_spec[key] = _rebase(str(node_spec[key]), base0, member.remote_dir)
            node_spec["env"] = {**spec.get("env", {}), **node_env(rank, ips, port)}
            node_spec["node_rank"] = rank
            transport = target.provider.connect(member)
            node_code = _rebase(code_dir, base0, member.remote_dir) if code_dir else ""
            stats, answer = start(runtime, member, transport, request, node_spec, tree,
                                  node_code, progress)  # fmt: skip
            nodes.append({"rank": rank, "host": hosts[rank], "ip": ips[rank],
                          "job_dir": answer["job_dir"]})  # fmt: skip
            if first is None:
                first = (stats, answer)
            progress(f"rank {rank} started on {member.name} ({ips[rank]})")
    except BaseException:
        for node in nodes:  # don't leave half a group running
            _cancel_node(runtime, instance.provider, node, 0.0)
        raise
    spec["nodes"] = nodes
    spec["master_port"] = port
    assert first is not None
    return first


def node_job(job: Job, rank: int) -> Job:
    """``job`` as seen on rank ``rank`` (its host and job dir), for logs --node."""
    if job.provider == "slurm":  # srun'd agents: rank N lives in <job_dir>/nodes/N
        count = int((job.spec.get("placement") or {}).get("nodes") or 1)
        if not 0 <= rank < count:
            raise UsageError(f"job {job.job_id} has no node {rank}",
                             hint=f"nodes are 0..{count - 1}")  # fmt: skip
        return replace(job, job_dir=f"{job.job_dir}/nodes/{rank}") if rank else job
    nodes = job.spec.get("nodes") or []
    if not 0 <= rank < max(len(nodes), 1):
        raise UsageError(f"job {job.job_id} has no node {rank}",
                         hint=f"nodes are 0..{max(len(nodes), 1) - 1}")  # fmt: skip
    if not nodes:
        return job
    node = nodes[rank]
    return replace(job, instance_id=str(node["host"]), job_dir=str(node["job_dir"]))


def _cancel_node(runtime: Runtime, provider: str, node: dict[str, Any], grace: float) -> None:
    target = instance_of_job(runtime, provider, str(node["host"]))
    transport = target.provider.connect(target.instance)
    agent.call_json(target.instance, transport,
                    ["cancel", "--job-dir", str(node["job_dir"]), "--grace", str(grace)],
                    timeout=grace + 60)  # fmt: skip


def cancel_others(runtime: Runtime, job: Job, grace: float) -> None:
    """Cancel ranks 1.. of a group job (rank 0 is cancelled as any job is)."""
    for node in (job.spec.get("nodes") or [])[1:]:
        _cancel_node(runtime, job.provider, node, grace)


def wait_others(runtime: Runtime, job: Job, timeout_s: float) -> list[dict[str, Any]]:
    """Wait for ranks 1.. to end; their final statuses (rank order)."""
    statuses = []
    for node in (job.spec.get("nodes") or [])[1:]:
        target = instance_of_job(runtime, job.provider, str(node["host"]))
        transport = target.provider.connect(target.instance)
        status = agent.call_json(target.instance, transport,
                                 ["wait", "--job-dir", str(node["job_dir"]),
                                  "--timeout", f"{timeout_s:.1f}"],
                                 timeout=timeout_s + 30)  # fmt: skip
        statuses.append({"rank": node["rank"], **status})
    return statuses


def combine(status: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    """The group's status: rank 0's, but failed (with that rank's code) if another failed."""
    merged = dict(status, nodes=[{"rank": 0, "state": status.get("state")}] + [
        {"rank": o["rank"], "state": o.get("state"), "exit_code": o.get("exit_code")}
        for o in others
    ])  # fmt: skip
    if status.get("state") == "succeeded":
        for other in others:
            if other.get("state") != "succeeded":
                merged.update(state="failed", exit_code=other.get("exit_code") or 1)
                break
    return merged


def settle(runtime: Runtime, job: Job, status: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Rank 0 ended: wait for the other ranks (cancel them if rank 0 did not succeed)."""
    if status.get("state") != "succeeded":
        cancel_others(runtime, job, float(runtime.config.get("jobs.grace_s")))
    return combine(status, wait_others(runtime, job, timeout_s))
