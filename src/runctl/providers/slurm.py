"""The Slurm provider: jobs go through a cluster's batch scheduler.

``slurm:local`` runs the Slurm commands on this machine (a login node, or a workstation that
is a submit host); ``slurm:NAME`` reaches the login node ``NAME``, a host registered with
``runctl hosts add NAME ...``, over SSH.

How a job runs: the CLI syncs the code to the login node as for any SSH host, the agent
prepares the job dir (``start --no-launch``), and instead of forking the agent there, runctl
writes ``job.sbatch`` into the job dir and submits it. Its body runs the agent in the
foreground on the compute node(s) (``supervise``), so logs, status, wait, cancel and
checkpoints all work through the agent's files. This needs the login user's runctl dir
(code, jobs, checkpoints) on a filesystem shared with the compute nodes, and the same python
path on all of them: the usual home-on-NFS setup.

Placement (``run --nodes --gpus-per-node --partition --time --retries``, defaults from the
``slurm.*`` config keys) becomes ``#SBATCH`` lines. Retries use Slurm's own requeue, not job
arrays: ``--requeue`` lets Slurm restart the job after a preemption or a node failure, and
the script refuses to run a restart past ``--retries``. Each restart appends to the same log
and resumes from the newest checkpoint (RUNCTL_RESUME_FROM). ``--nodes N`` starts one agent
per node with ``srun``; each gets RUNCTL_NODE_RANK, RUNCTL_NUM_NODES, RUNCTL_NODE_IPS,
MASTER_ADDR and MASTER_PORT (20000 + job id mod 20000) so ``torchrun`` works unchanged.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from runctl.errors import NotFoundError, TransportError, UsageError
from runctl.models import Completed, Instance
from runctl.providers.base import AgentCall, Provider, SupportsBatchStart
from runctl.runtime import Runtime
from runctl.transport.base import Transport
from runctl.transport.local import LocalTransport
from runctl.transport.ssh import SSHTransport

LOCAL_ID = "local"
_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^\d+-\d+$")
_PARTITION_RE = re.compile(r"^[A-Za-z0-9_.,-]+$")


def parse_time(text: str) -> str:
    """Validate a Slurm time limit (``MM``, ``HH:MM:SS``, ``D-HH[:MM]``...)."""
    if not _TIME_RE.match(text):
        raise UsageError(
            f"invalid time limit {text!r}", hint="use Slurm's form: 90, 2:00:00, 1-12"
        )
    return text


def render_sbatch(
    spec: dict[str, Any], job_dir: str, python: str, agent_path: str, options: dict[str, Any]
) -> str:
    """The batch script for a job: #SBATCH placement lines, then the agent in the foreground."""
    nodes = int(options.get("nodes") or 1)
    retries = int(options.get("retries") or 0)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=runctl-{spec['job_id']}",
        f"#SBATCH --output={job_dir}/slurm-%j.out",
        "#SBATCH --open-mode=append",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if options.get("partition"):
        lines.append(f"#SBATCH --partition={options['partition']}")
    if options.get("time"):
        lines.append(f"#SBATCH --time={options['time']}")
    if options.get("gpus_per_node"):
        lines.append(f"#SBATCH --gres=gpu:{int(options['gpus_per_node'])}")
    lines.append("#SBATCH --requeue" if retries > 0 else "#SBATCH --no-requeue")
    agent = shlex.join([python, agent_path, "supervise", "--job-dir", job_dir])
    lines += [
        "",
        "# Slurm restarts a requeued job with SLURM_RESTART_COUNT set; stop after --retries.",
        f'if [ "${{SLURM_RESTART_COUNT:-0}}" -gt {retries} ]; then',
        f'  echo "[runctl] restart $SLURM_RESTART_COUNT is past --retries {retries}; giving up"'
        f" >> {shlex.quote(job_dir + '/log')}",
        "  exit 1",
        "fi",
    ]
    if nodes > 1:
        lines.append(f"exec srun --nodes={nodes} --ntasks-per-node=1 --kill-on-bad-exit=0 {agent}")
    else:
        lines.append(f"exec {agent}")
    return "\n".join(lines) + "\n"


class SlurmProvider(Provider, SupportsBatchStart):
    name = "slurm"
    unsupported: ClassVar[dict[str, str]] = {
        "stop": "Slurm allocates nodes per job; there is no machine to stop",
        "create": "clusters already exist; name one with --on slurm:local or slurm:LOGIN_HOST",
    }

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def check(self) -> None:
        return None

    def _hourly_usd(self) -> float | None:
        rate = float(self.runtime.config.get("slurm.hourly_usd_per_node"))
        return rate if rate > 0 else None

    def get_instance(self, instance_id: str) -> Instance | None:
        if instance_id == LOCAL_ID:
            return Instance(
                provider="slurm",
                instance_id=LOCAL_ID,
                name="slurm:local",
                remote_dir=str(self.runtime.home / "slurm"),
                hourly_usd=self._hourly_usd(),
            )
        host = self.runtime.store.get_host(instance_id)
        if host is None:
            raise NotFoundError(
                f"no login host named {instance_id!r}",
                hint=f"register the cluster's login node: runctl hosts add {instance_id} "
                "USER@LOGIN_HOST, or use --on slurm:local on a submit host",
            )
        return Instance(
            provider="slurm",
            instance_id=host.name,
            name=f"slurm:{host.name}",
            ssh=host.target,
            remote_dir=host.remote_dir,
            python=host.python,
            hourly_usd=self._hourly_usd(),
        )

    def list_instances(self) -> list[Instance]:
        local = self.get_instance(LOCAL_ID)
        return [local] if local is not None else []

    def connect(self, instance: Instance) -> Transport:
        if instance.ssh is None:
            return LocalTransport(self.runtime.config.get("local.python") or None)
        cfg = self.runtime.config
        return SSHTransport(
            instance.ssh,
            home=self.runtime.home,
            config_file=cfg.get("ssh.config_file"),
            connect_timeout_s=cfg.get("ssh.connect_timeout_s"),
            control_persist_s=cfg.get("ssh.control_persist_s"),
            python=instance.python,
            sync_method=cfg.get("ssh.sync_method"),
        )

    def options(self, placement: dict[str, Any]) -> dict[str, Any]:
        """sbatch options: CLI placement over the slurm.* config defaults, validated."""
        cfg = self.runtime.config
        merged: dict[str, Any] = {
            "partition": cfg.get("slurm.partition"),
            "time": cfg.get("slurm.time"),
            "gpus_per_node": cfg.get("slurm.gpus_per_node"),
            "retries": cfg.get("slurm.retries"),
            "nodes": 1,
        }
        merged.update({k: v for k, v in placement.items() if v is not None})
        if merged["partition"] and not _PARTITION_RE.match(str(merged["partition"])):
            raise UsageError(f"invalid partition {merged['partition']!r}")
        if merged["time"]:
            merged["time"] = parse_time(str(merged["time"]))
        for key in ("nodes", "gpus_per_node", "retries"):
            if int(merged[key] or 0) < 0:
                raise UsageError(f"--{key.replace('_', '-')} must not be negative")
        if int(merged["nodes"]) < 1:
            raise UsageError("--nodes must be at least 1")
        return merged

    def start_job(
        self,
        instance: Instance,
        transport: Transport,
        args: Sequence[str],
        payload: bytes,
        call: AgentCall,
    ) -> Completed:
        spec = json.loads(payload)
        options = self.options(dict(spec.get("placement") or {}))
        spec["launcher"] = "slurm"
        spec["placement"] = options
        rate = self._hourly_usd()
        if rate is not None:
            spec["hourly_usd"] = rate * int(options["nodes"])
        done = call([*args, "--no-launch"], json.dumps(spec).encode())
        if done.returncode != 0:
            return done
        answer: dict[str, Any] = json.loads(done.stdout)
        job_dir = str(answer["job_dir"])
        script = render_sbatch(spec, job_dir, answer["python"], answer["agent"], options)
        path = f"{job_dir}/job.sbatch"
        wrote = transport.run(["sh", "-c", 'cat > "$1"', "sh", path], input=script.encode())
        if wrote.returncode != 0:
            return wrote
        conf = str(self.runtime.config.get("slurm.conf_file") or "")
        prefix = ["env", f"SLURM_CONF={conf}"] if conf else []
        submitted = transport.run([*prefix, "sbatch", "--parsable", path], timeout=60)
        if submitted.returncode != 0:
            detail = submitted.stderr.decode(errors="replace").strip()
            self._write(transport, f"{job_dir}/state.json", {"state": "failed", "exit_code": 1,
                                                              "error": detail})  # fmt: skip
            return Completed(submitted.argv, 1, b"", f"sbatch failed: {detail}".encode())
        slurm_id = submitted.stdout.decode().strip().split(";")[0]
        info = {"slurm_job_id": slurm_id, "options": options, "slurm_conf": conf or None}
        self._write(transport, f"{job_dir}/slurm.json", info)
        answer["slurm_job_id"] = slurm_id
        return Completed(submitted.argv, 0, json.dumps(answer).encode(), b"")

    def _write(self, transport: Transport, path: str, data: dict[str, Any]) -> None:
        script = 'cat > "$1.tmp" && mv "$1.tmp" "$1"'
        done = transport.run(["sh", "-c", script, "sh", path], input=json.dumps(data).encode())
        if done.returncode != 0:
            raise TransportError(f"cannot write {Path(path).name} on the login node")
