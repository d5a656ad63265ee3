"""The job runner: submit, refresh, follow, wait, cancel, fetch — one path for every provider.

A submit records the job in state first (so nothing started is ever untracked), syncs the
project tree to the host (skipped for the local provider, which runs the tree in place), then
asks the agent to start the job detached. The warm path is one round trip: the agent verifies
the code manifest and exists already; only if it answers "stale" or is missing do we sync or
install it and try again.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from runctl.core import agent, multinode, sync
from runctl.core.sync_select import find_project_root
from runctl.core.targets import Target, instance_of_job
from runctl.errors import (
    ConflictError,
    NotFoundError,
    RunctlError,
    TransportError,
    UsageError,
)
from runctl.models import Completed, Instance, Job, JobSpec, JobState, SyncStats
from runctl.providers import REGISTRY, get_provider
from runctl.providers.base import AgentCall, SupportsBatchStart
from runctl.runtime import Runtime
from runctl.state.db import now_iso
from runctl.transport.base import Transport
from runctl.transport.local import LocalTransport

Progress = Callable[[str], None]
EXIT_STALE, EXIT_BUSY = 10, 11
FINAL_STATES = frozenset(str(s) for s in JobState if s.is_final)
_SLUG_RE = re.compile(r"[^a-z0-9]+")


def slug(text: str, default: str = "job") -> str:
    """Lower-case alphanumerics and dashes, at most 40 chars: safe in paths and ids."""
    value = _SLUG_RE.sub("-", text.lower()).strip("-")[:40].strip("-")
    return value or default


@dataclass
class SubmitRequest:
    argv: Sequence[str]  # script (or command) first, then its arguments
    kind: str = "script"  # "script" | "command"
    name: str | None = None
    project: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    includes: Sequence[str] = ()
    exclusive: bool = False
    resume: bool = True
    resume_from: str | None = None
    checkpoint_dir: str | None = None
    install_requirements: bool | None = None
    sync: bool = True
    grace_s: float | None = None
    # argv lists the agent runs on the host before / after the command, output in the log
    pre_commands: Sequence[Sequence[str]] = ()
    post_commands: Sequence[Sequence[str]] = ()
    project_root: Path | None = None  # for commands: the tree to sync (default: from cwd)
    # {"down": argv, "up": argv, "interval_s": s}: restore before start, copy while running
    checkpoint_store: dict[str, Any] | None = None
    budget_usd: float | None = None  # cost limit, enforced by core.budget (not by the agent)
    # batch-scheduler placement (nodes, gpus_per_node, partition, time, retries): Slurm only
    placement: dict[str, Any] = field(default_factory=dict)
    # run in a container: {"image", "network", "gpus": auto|all|none, "args", "python"}
    docker: dict[str, Any] | None = None
    # more keys for the recorded spec, stored with the job from the start (spot recovery's
    # chain of attempts)
    spec_extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Submitted:
    job: Job
    sync: SyncStats | None
    seconds: float


def _project_root(request: SubmitRequest) -> tuple[Path, list[str]]:
    """The local project root and the argv as the host will see it (script made relative)."""
    argv = list(request.argv)
    if not argv or not argv[0]:
        raise UsageError("nothing to run", hint="give a script: runctl run train.py -- --epochs 3")
    if request.kind == "command":
        if request.project_root is not None:
            return request.project_root, argv
        return find_project_root(Path.cwd() / "__runctl_exec__"), argv
    script = Path(argv[0])
    if "\0" in argv[0]:
        raise UsageError("script path contains a NUL byte")
    if not script.is_file():
        raise NotFoundError(
            f"script not found: {argv[0]}",
            hint="give a path to a file, relative to the current directory",
        )
    root = find_project_root(script)
    try:
        rel = script.resolve().relative_to(root)
    except ValueError:
        raise UsageError(
            f"{argv[0]} is outside the project root {root}",
            hint="run from inside the project, or add a marker file (pyproject.toml) above it",
        ) from None
    return root, [rel.as_posix(), *argv[1:]]


def new_job_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def submit(
    runtime: Runtime, target: Target, request: SubmitRequest, progress: Progress
) -> Submitted:
    """Start a job on ``target``. Records it first; raises RunctlError subclasses on failure."""
    started = time.monotonic()
    root, argv = _project_root(request)
    cfg = runtime.config
    project = slug(request.project or cfg.get("defaults.project") or root.name, "project")
    name = slug(request.name or PurePosixPath(argv[0]).stem, "job")
    job_id = new_job_id(name)
    instance = target.instance
    transport = target.provider.connect(instance)
    is_local = isinstance(transport, LocalTransport)
    base = instance.remote_dir
    job_dir = f"{base}/jobs/{job_id}"
    if is_local:
        workdir = str(root)
        code_dir = ""
        ckpt_base = cfg.get("local.checkpoint_dir") or str(runtime.home / "local" / "checkpoints")
        install = bool(request.install_requirements)
    else:
        code_dir = f"{base}/code/{project}/current"
        workdir = code_dir  # the agent resolves it to the version current at start
        ckpt_base = f"{base}/checkpoints"
        install = (
            cfg.get("jobs.install_requirements")
            if request.install_requirements is None
            else request.install_requirements
        )
    checkpoint_dir = request.checkpoint_dir or f"{ckpt_base}/{project}/{name}"
    spec = JobSpec(
        job_id=job_id,
        name=name,
        project=project,
        argv=tuple(argv),
        kind=request.kind,
        env=dict(request.env),
        workdir=workdir,
        checkpoint_dir=checkpoint_dir,
        output_dir=f"{job_dir}/outputs",
        resume_from=request.resume_from,
        resume=request.resume,
        install_requirements=install,
        grace_s=request.grace_s if request.grace_s is not None else cfg.get("jobs.grace_s"),
        pre_commands=tuple(tuple(c) for c in request.pre_commands),
        post_commands=tuple(tuple(c) for c in request.post_commands),
    ).to_json()
    if code_dir:
        spec["code_dir"] = code_dir
    if request.checkpoint_store:
        spec["checkpoint_store"] = request.checkpoint_store
    if request.docker:  # the image brings its own dependencies: no host venv
        spec["docker"] = dict(request.docker)
        spec["install_requirements"] = False
    spec["local_root"] = str(root)
    spec.update(request.spec_extra)
    # Who is submitting: `reconcile` tells a submit in flight from one whose CLI was killed.
    spec["submitted_by"] = {"pid": os.getpid(), "host": socket.gethostname()}
    if request.budget_usd is not None:
        spec["budget_usd"] = request.budget_usd
    if request.placement:
        if not isinstance(target.provider, SupportsBatchStart):
            raise UsageError(
                f"--{next(iter(request.placement)).replace('_', '-')} needs a batch scheduler",
                hint="use it with --on slurm:CLUSTER (on SSH hosts: --on ssh:HOST1,HOST2)",
            )
        spec["placement"] = dict(request.placement)
    job = Job(
        job_id=job_id,
        name=name,
        project=project,
        provider=instance.provider,
        instance_id=instance.instance_id,
        state=JobState.SUBMITTING,
        argv=tuple(argv),
        job_dir=job_dir,
        workdir=workdir,
        checkpoint_dir=checkpoint_dir,
        created_at=now_iso(),
        spec=spec,
    )
    runtime.store.insert_job(job)
    try:
        if multinode.node_hosts(instance):  # an SSH host group: one agent per host
            stats, answer = multinode.start_group(runtime, instance, request, spec, root,
                                                  code_dir, progress, _start)  # fmt: skip
            runtime.store.update_job(job_id, spec=spec)
        else:
            stats, answer = _start(runtime, instance, transport, request, spec, root, code_dir,
                                   progress)  # fmt: skip
    except BaseException as exc:
        runtime.store.update_job(job_id, state=JobState.FAILED, ended_at=now_iso())
        runtime.store.add_event("job.submit_failed", job_id, {"error": str(exc)})
        raise
    runtime.store.update_job(
        job_id,
        state=JobState.RUNNING,
        started_at=now_iso(),
        job_dir=answer["job_dir"],
        workdir=answer.get("workdir", workdir),
        pid=answer.get("agent_pid"),
    )
    return Submitted(runtime.store.get_job(job_id), stats, time.monotonic() - started)


def _start(
    runtime: Runtime,
    instance: Instance,
    transport: Transport,
    request: SubmitRequest,
    spec: dict[str, Any],
    root: Path,
    code_dir: str,
    progress: Progress,
) -> tuple[SyncStats | None, dict[str, Any]]:
    stats: SyncStats | None = None
    args = ["start", "--base", instance.remote_dir]
    if request.exclusive:
        args.append("--exclusive")
    tree = None
    if code_dir and request.sync:
        scan_started = time.monotonic()
        tree = sync.scan_tree(runtime, root, request.includes)
        args += ["--expect-manifest", tree.manifest.digest, "--code-dir", code_dir]
        if not sync.is_known_synced(runtime, instance, code_dir, tree):
            stats = sync.push_tree(runtime, instance, transport, tree, code_dir, progress)
        else:
            stats = SyncStats(len(tree.manifest.files), 0, 0, 0, True,
                              time.monotonic() - scan_started)  # fmt: skip
    payload = json.dumps(spec).encode()
    done = _start_job(runtime, instance, transport, args, payload)
    if done.returncode == EXIT_STALE and tree is not None:
        # The host's copy changed behind our back (another machine, a wiped dir): full sync.
        sync.forget(runtime, instance, code_dir)
        stats = sync.push_tree(runtime, instance, transport, tree, code_dir, progress)
        done = _start_job(runtime, instance, transport, args, payload)
    if done.returncode == EXIT_BUSY:
        other = json.loads(done.stdout).get("job_id", "?")
        raise ConflictError(
            f"project {spec['project']!r} already has a running job on {instance.name}: {other}",
            hint=f"wait for it (`runctl wait {other}`), cancel it, or drop --exclusive",
        )
    if done.returncode != 0:
        detail = (done.stdout or done.stderr).decode(errors="replace").strip()[-300:]
        raise TransportError(f"the agent could not start the job on {instance.name}: {detail}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return stats, answer


def _start_job(
    runtime: Runtime, instance: Instance, transport: Transport, args: list[str], payload: bytes
) -> Completed:
    """`agent start` (detached on the host), or the provider's own way (Slurm: sbatch)."""
    module, _, name = REGISTRY.get(instance.provider, "").partition(":")
    cls = getattr(importlib.import_module(module), name, None) if module else None
    if isinstance(cls, type) and issubclass(cls, SupportsBatchStart):
        provider = get_provider(instance.provider, runtime)
        assert isinstance(provider, SupportsBatchStart)
        call = agent_call(instance, transport)
        return provider.start_job(instance, transport, args, payload, call)
    return agent.call(instance, transport, args, input=payload)


def agent_call(instance: Instance, transport: Transport) -> AgentCall:
    def call(args: Sequence[str], payload: bytes | None) -> Completed:
        return agent.call(instance, transport, args, input=payload)

    return call


def resubmit(
    runtime: Runtime,
    old: Job,
    *,
    resume_from: str | None,
    resume_arg: bool,
    progress: Progress,
    target: Target | None = None,
    spec_extra: dict[str, Any] | None = None,
) -> Submitted:
    """Run ``old`` again with the same name, so it resumes from the newest checkpoint in its
    checkpoint dir (or ``resume_from``); ``resume_arg`` also passes ``--resume PATH`` to the
    script. On ``old``'s target, or on ``target`` (spot recovery: a replacement machine)."""
    spec = old.spec
    root = Path(spec.get("local_root") or Path.cwd())
    argv = list(old.argv)
    kind = str(spec.get("kind", "script"))
    if kind == "script":
        script = root / argv[0]
        if not script.is_file():
            raise NotFoundError(
                f"{script} no longer exists locally", hint="resume from the project directory"
            )
        argv[0] = str(script)
    if resume_arg and resume_from:
        argv += ["--resume", resume_from]
    request = SubmitRequest(
        argv=argv,
        kind=kind,
        name=old.name,
        project=old.project,
        env=dict(spec.get("env") or {}),
        resume_from=resume_from,
        checkpoint_dir=old.checkpoint_dir,
        grace_s=spec.get("grace_s"),
        project_root=root,
        checkpoint_store=spec.get("checkpoint_store"),
        pre_commands=spec.get("pre_commands") or (),
        post_commands=spec.get("post_commands") or (),
        budget_usd=spec.get("budget_usd"),
        docker=spec.get("docker"),
        spec_extra=dict(spec_extra or {}),
    )
    if target is None:
        target = instance_of_job(runtime, old.provider, old.instance_id)
    return submit(runtime, target, request, progress)


# ----------------------------------------------------------------------------- refresh


def _apply_status(runtime: Runtime, job: Job, status: dict[str, Any]) -> Job:
    raw = status.get("state", "unknown")
    mapping = {"starting": JobState.RUNNING, "setup": JobState.SETUP, "missing": JobState.LOST,
               "unknown": JobState.LOST, "pending": JobState.SETUP}  # fmt: skip
    state = mapping.get(raw) or JobState(raw)
    fields: dict[str, Any] = {}
    if state != job.state:
        fields["state"] = state
    if status.get("exit_code") is not None and status["exit_code"] != job.exit_code:
        fields["exit_code"] = int(status["exit_code"])
    if state.is_final and status.get("ended_at") and not job.ended_at:
        fields["ended_at"] = status["ended_at"]
    if fields:
        runtime.store.update_job(job.job_id, **fields)
        return runtime.store.get_job(job.job_id)
    return job


def refresh(runtime: Runtime, jobs: Sequence[Job]) -> tuple[list[Job], dict[str, str]]:
    """Ask each host about its unfinished jobs (hosts in parallel).

    Returns the refreshed jobs and, per unreachable host, the reason; their jobs keep the state
    last seen.
    """
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        if not job.state.is_final and job.state != JobState.SUBMITTING:
            groups.setdefault((job.provider, job.instance_id), []).append(job)
    updated: dict[str, Job] = {}
    errors: dict[str, str] = {}

    # Targets are resolved here, on the thread that owns the state connection; the worker
    # threads only talk to hosts.
    targets: dict[tuple[str, str], Target | str] = {}
    for key in groups:
        try:
            targets[key] = instance_of_job(runtime, *key)
        except RunctlError as exc:
            targets[key] = exc.message

    def ask(key: tuple[str, str]) -> tuple[tuple[str, str], dict[str, Any] | str]:
        target = targets[key]
        if isinstance(target, str):
            return key, target
        try:
            transport = target.provider.connect(target.instance)
            ids = [j.job_id for j in groups[key]]
            base = target.instance.remote_dir
            answer = agent.call_json(target.instance, transport, ["status", "--base", base, *ids],
                                     timeout=30)  # fmt: skip
            return key, answer
        except RunctlError as exc:
            return key, exc.message

    if groups:
        with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
            results = list(pool.map(ask, groups))
        for key, answer in results:
            if isinstance(answer, str):
                errors[f"{key[0]}:{key[1]}"] = answer
                continue
            for job in groups[key]:
                if job.job_id in answer:
                    updated[job.job_id] = _apply_status(runtime, job, answer[job.job_id])
    return [updated.get(j.job_id, j) for j in jobs], errors


def refresh_one(runtime: Runtime, job: Job) -> tuple[Job, dict[str, Any]]:
    """Refresh one job and return it with the agent's full status (log size, heartbeat...)."""
    return refresh_on(runtime, job, instance_of_job(runtime, job.provider, job.instance_id))


def refresh_on(runtime: Runtime, job: Job, target: Target) -> tuple[Job, dict[str, Any]]:
    """``refresh_one`` on a target already looked up (no second provider call)."""
    transport = target.provider.connect(target.instance)
    answer = agent.call_json(
        target.instance, transport, ["status", "--base", target.instance.remote_dir, job.job_id]
    )
    status: dict[str, Any] = answer.get(job.job_id, {"state": "missing"})
    return _apply_status(runtime, job, status), status


# ------------------------------------------------------------------------------ follow


def follow(
    runtime: Runtime,
    job: Job,
    out: BinaryIO,
    progress: Progress,
    *,
    offset: int = 0,
    follow: bool = True,
    last_lines: int = 0,
) -> tuple[Job, dict[str, Any]]:
    """Copy the job's log to ``out`` from byte ``offset``; with ``follow`` until the job ends.

    A dropped connection is retried from the exact byte count already written, so no line is
    lost or repeated; gives up after ``ssh.reconnect_timeout_s`` without progress.
    """
    target = instance_of_job(runtime, job.provider, job.instance_id)
    transport = target.provider.connect(target.instance)
    reconnect_s = float(runtime.config.get("ssh.reconnect_timeout_s"))
    last_ok = time.monotonic()
    delay = 0.5
    path = agent.agent_path(target.instance, transport)
    while True:
        args = ["tail", "--job-dir", job.job_dir, "--offset", str(offset)]
        if follow:
            args.append("--follow")
        if last_lines:
            args += ["--last-lines", str(last_lines)]
        proc = transport.popen([transport.python, path, *args])
        assert proc.stdout is not None and proc.stderr is not None
        fd = proc.stdout.fileno()
        received = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out.write(chunk)
            out.flush()
            received += len(chunk)
            last_ok = time.monotonic()
        err = proc.stderr.read()
        proc.wait()
        proc.stdout.close()  # callers that poll (the `top` log view) would leak the pipes
        proc.stderr.close()
        if last_lines:
            # The agent chose where the last N lines start; continue from there on reconnect.
            found = re.search(rb"^RUNCTL-OFFSET (\d+)$", err, re.MULTILINE)
            if found:
                offset = int(found.group(1))
                last_lines = 0
        offset += received
        end = _parse_end(err)
        if end is not None:
            return _apply_status(runtime, job, end), end
        if b"can't open file" in err:
            agent.upload_agent(target.instance, transport)
            continue
        if time.monotonic() - last_ok > reconnect_s:
            raise TransportError(
                f"lost the connection to {target.instance.name} for over {reconnect_s:.0f}s",
                hint=f"the job keeps running; resume with `runctl logs {job.job_id} --follow`",
            )
        progress(f"connection to {target.instance.name} lost; reconnecting (at byte {offset})")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _parse_end(stderr: bytes) -> dict[str, Any] | None:
    for line in reversed(stderr.decode(errors="replace").splitlines()):
        if line.startswith("RUNCTL-END "):
            try:
                value: dict[str, Any] = json.loads(line[len("RUNCTL-END ") :])
                return value
            except ValueError:
                return None
    return None


# -------------------------------------------------------------------------- wait/cancel


def wait(
    runtime: Runtime, job: Job, progress: Progress, *, timeout_s: float | None = None
) -> tuple[Job, dict[str, Any]]:
    """Block until the job ends (or ``timeout_s`` passes); survives dropped connections."""
    deadline = time.monotonic() + timeout_s if timeout_s else None
    reconnect_s = float(runtime.config.get("ssh.reconnect_timeout_s"))
    last_ok = time.monotonic()
    target = instance_of_job(runtime, job.provider, job.instance_id)
    transport = target.provider.connect(target.instance)
    while True:
        chunk = 20.0
        if deadline is not None:
            chunk = max(0.1, min(chunk, deadline - time.monotonic()))
        try:
            status = agent.call_json(
                target.instance,
                transport,
                ["wait", "--job-dir", job.job_dir, "--timeout", f"{chunk:.1f}"],
                timeout=chunk + 30,
            )
            last_ok = time.monotonic()
        except TransportError as exc:
            if time.monotonic() - last_ok > reconnect_s:
                raise
            progress(f"{exc.message}; retrying")
            time.sleep(1.0)
            continue
        ended = status.get("state") in FINAL_STATES or status.get("state") == "lost"
        if ended and job.spec.get("nodes"):  # a multi-node job ends when every rank has
            left = deadline - time.monotonic() if deadline is not None else 3600.0
            status = multinode.settle(runtime, job, status, max(left, 1.0))
        job = _apply_status(runtime, job, status)
        if job.state.is_final or job.state == JobState.LOST:
            return job, status
        if deadline is not None and time.monotonic() >= deadline:
            return job, status


def cancel(runtime: Runtime, job: Job, *, grace_s: float | None = None) -> Job:
    """SIGTERM the job, SIGKILL after the grace period; idempotent for finished jobs."""
    if job.state.is_final:
        return job
    grace = grace_s if grace_s is not None else float(runtime.config.get("jobs.grace_s"))
    multinode.cancel_others(runtime, job, grace)  # ranks 1.. of a multi-node job
    target = instance_of_job(runtime, job.provider, job.instance_id)
    transport = target.provider.connect(target.instance)
    status = agent.call_json(
        target.instance,
        transport,
        ["cancel", "--job-dir", job.job_dir, "--grace", str(grace)],
        timeout=grace + 60,
    )
    runtime.store.add_event("job.cancel", job.job_id, {"grace_s": grace})
    return _apply_status(runtime, job, status)


def exit_code_of(job: Job) -> int:
    """The exit code a CLI waiting on ``job`` should return."""
    if job.exit_code is not None:
        return job.exit_code
    if job.state == JobState.SUCCEEDED:
        return 0
    return 1


# ------------------------------------------------------------------------------- fetch


def check_relative(path: str) -> str:
    """Normalise a user-given path inside a job; UsageError for absolute or escaping paths."""
    if not path or "\0" in path:
        raise UsageError("empty or invalid path")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise UsageError(
            f"refusing path {path!r}: it must stay inside the job directory",
            hint="give a relative path such as outputs/metrics.json",
        )
    return pure.as_posix()


def fetch(
    runtime: Runtime,
    job: Job,
    path: str,
    dest: Path,
    *,
    root: str = "job",
    overwrite: bool = False,
) -> Path:
    """Download ``path`` (relative to the job dir, or ``checkpoints``) to ``dest``."""
    rel = check_relative(path)
    base = job.checkpoint_dir if root == "checkpoints" else job.job_dir
    target = instance_of_job(runtime, job.provider, job.instance_id)
    transport = target.provider.connect(target.instance)
    done = agent.call(target.instance, transport, ["resolve", "--root", base, "--path", rel])
    answer = json.loads(done.stdout or b"{}")
    if done.returncode != 0:
        if answer.get("error") == "outside":
            raise UsageError(
                f"refusing {path!r}: it resolves outside the job directory (symlink?)"
            )
        raise NotFoundError(f"{path} does not exist in job {job.job_id}",
                            hint=f"list files with `runctl status {job.job_id}`")  # fmt: skip
    remote_path = answer["path"]
    if dest.exists() and dest.is_dir():
        dest = dest / PurePosixPath(rel).name
    if dest.exists() and not overwrite and not answer["is_dir"]:
        raise ConflictError(f"{dest} already exists", hint="pass --force to overwrite it")
    transport.fetch(remote_path, dest, recursive=bool(answer["is_dir"]))
    return dest
