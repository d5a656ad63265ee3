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
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from runctl.core import agent, logcache
from runctl.core.reconcile_jobs import submitter
from runctl.core.targets import Target, instance_of_job
from runctl.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    RunctlError,
    TransportError,
    UsageError,
)
from runctl.lazy import lazy_module
from runctl.models import Completed, Instance, Job, JobSpec, JobState, SyncStats
from runctl.providers import REGISTRY, get_provider
from runctl.providers.base import AgentCall, SupportsBatchStart
from runctl.runtime import Runtime
from runctl.state.db import now_iso
from runctl.transport.base import Transport
from runctl.transport.local import LocalTransport

if TYPE_CHECKING:
    import secrets

    from runctl.core import multinode, secret_env, sync, sync_scope
else:
    # Only submit (and multi-node wait/cancel) use these; the read paths of `jobs`, `status`,
    # `wait`, `logs` must not pay their import (pathspec, hashlib, ...) at start-up.
    multinode = lazy_module("runctl.core.multinode")
    secret_env = lazy_module("runctl.core.secret_env")
    sync = lazy_module("runctl.core.sync")
    sync_scope = lazy_module("runctl.core.sync_scope")
    secrets = lazy_module("secrets")

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
    # name -> value, delivered to the job's environment and never recorded (core.secret_env)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    env_file: str | None = None  # --env-file (its values are in ``secrets``); for restarts
    includes: Sequence[str] = ()
    exclusive: bool = False
    # refuse when any job runs on the machine (cloud `train`; --allow-concurrent lifts it)
    exclusive_machine: bool = False
    resume: bool = True
    resume_from: str | None = None
    checkpoint_dir: str | None = None
    install_requirements: bool | None = None
    sync: bool = True
    grace_s: float | None = None
    # argv lists the agent runs on the host before / after the command, output in the log
    pre_commands: Sequence[Sequence[str]] = ()
    post_commands: Sequence[Sequence[str]] = ()
    # --project-root: the tree to sync (default: found from the script, or for commands
    # from ``cwd``; see core.sync_scope)
    project_root: Path | None = None
    cwd: Path | None = None  # commands: where the project search starts (default: here)
    yes: bool = False  # --yes: send a tree above sync.max_files / sync.max_mb without asking
    confirm: Callable[[str], bool] | None = None  # asks the user a y/N question (a terminal)
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


def new_job_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def submit(
    runtime: Runtime, target: Target, request: SubmitRequest, progress: Progress
) -> Submitted:
    """Start a job on ``target``. Records it first; raises RunctlError subclasses on failure."""
    started = time.monotonic()
    scope = sync_scope.scope_of(request.argv, request.kind, request.project_root, request.cwd)
    root, argv = scope.root, scope.argv
    cfg = runtime.config
    recorded_env, delivered = _secrets_of(request, cfg.get("jobs.secrets"))
    request = replace(request, secrets=delivered)  # what _start sends to the agent
    project = slug(request.project or cfg.get("defaults.project") or root.name, "project")
    name = slug(request.name or PurePosixPath(argv[0]).stem, "job")
    job_id = new_job_id(name)
    instance = target.instance
    transport = target.provider.connect(instance)
    if delivered and getattr(transport, "records_input", False):
        raise UsageError(
            f"secrets cannot go to {instance.name} over SSM: SSM records what a command is sent",
            hint="reach the instance over SSH (--transport ssh, or aws.transport = ssh)",
        )
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
        env=recorded_env,
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
    spec["sync_scope"] = scope.mode  # a restart finds the same files (resubmit)
    if request.includes:
        spec["includes"] = list(request.includes)
    if delivered:  # names only: a restart reads the values again (secret_env.for_restart)
        spec["secrets"] = sorted(delivered)
    if request.env_file:
        spec["env_file"] = request.env_file
    spec.update(request.spec_extra)
    # Who is submitting: `reconcile` tells a submit in flight from one whose CLI was killed.
    spec["submitted_by"] = submitter()
    if request.budget_usd is not None:
        spec["budget_usd"] = request.budget_usd
    if request.placement:
        if not isinstance(target.provider, SupportsBatchStart):
            raise UsageError(
                f"--{next(iter(request.placement)).replace('_', '-')} needs a batch scheduler",
                hint="use it with --on slurm:CLUSTER (on SSH hosts: --on ssh:HOST1,HOST2)",
            )
        spec["placement"] = dict(request.placement)
    tree = None
    if code_dir and request.sync:
        # Before the job exists: a sync refused at the size question leaves nothing behind.
        tree = sync_scope.scan(runtime, scope, request.includes, instance, code_dir, progress,
                               yes=request.yes, confirm=request.confirm)  # fmt: skip
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
            stats, answer = multinode.start_group(runtime, instance, request, spec, tree,
                                                  code_dir, progress, _start)  # fmt: skip
            runtime.store.update_job(job_id, spec=spec)
        else:
            stats, answer = _start(runtime, instance, transport, request, spec, tree, code_dir,
                                   progress)  # fmt: skip
    except ConflictError:
        # Refused before anything started (--exclusive, a busy machine): no job to show.
        runtime.store.delete_jobs([job_id])
        raise
    except BaseException as exc:
        runtime.store.update_job(job_id, state=JobState.FAILED, ended_at=now_iso())
        runtime.store.add_event("job.submit_failed", job_id, {"error": str(exc)})
        raise
    cancelled = runtime.store.get_job(job_id).state == JobState.CANCELLED
    runtime.store.update_job(
        job_id,
        state=JobState.RUNNING,
        started_at=now_iso(),
        job_dir=answer["job_dir"],
        workdir=answer.get("workdir", workdir),
        pid=answer.get("agent_pid"),
    )
    if cancelled:  # `cancel` ran while we were submitting: carry it out now that it runs
        cancel(runtime, runtime.store.get_job(job_id))
    return Submitted(runtime.store.get_job(job_id), stats, time.monotonic() - started)


def _secrets_of(
    request: SubmitRequest, config_names: Sequence[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(the env to record, with ``***`` for secrets; the secret values to deliver).

    Secret-looking ``--env`` values become secrets; names in the ``jobs.secrets`` config are
    read from this environment (UsageError if one is unset), before anything is recorded.
    """
    plain, delivered = secret_env.split_env(request.env)
    delivered.update(request.secrets)
    wanted = [n for n in config_names if n not in delivered and n not in plain]
    delivered.update(secret_env.from_environment(wanted, os.environ, origin="config jobs.secrets"))
    for name in delivered:
        plain.pop(name, None)
    return {**plain, **dict.fromkeys(delivered, secret_env.MASK)}, delivered


def _payload(spec: dict[str, Any], secrets: dict[str, str]) -> bytes:
    """The `agent start` request: the spec, plus the secret values (stdin only; the agent
    keeps them out of job.json)."""
    return json.dumps({**spec, "secret_env": secrets} if secrets else spec).encode()


def _start(
    runtime: Runtime,
    instance: Instance,
    transport: Transport,
    request: SubmitRequest,
    spec: dict[str, Any],
    tree: sync.LocalTree | None,
    code_dir: str,
    progress: Progress,
) -> tuple[SyncStats | None, dict[str, Any]]:
    """Sync ``tree`` (None: no sync) into ``code_dir`` if needed and start the job."""
    stats: SyncStats | None = None
    args = ["start", "--base", instance.remote_dir]
    if request.exclusive:
        args.append("--exclusive")
    if request.exclusive_machine:
        args.append("--exclusive-machine")
    if tree is not None:
        args += ["--expect-manifest", tree.manifest.digest, "--code-dir", code_dir]
        if not sync.is_known_synced(runtime, instance, code_dir, tree):
            stats = sync.push_tree(runtime, instance, transport, tree, code_dir, progress)
        else:
            stats = SyncStats(len(tree.manifest.files), 0, 0, 0, True, 0.0)
    payload = _payload(spec, request.secrets)
    done = _start_job(runtime, instance, transport, args, payload)
    if done.returncode == EXIT_STALE and tree is not None:
        # The host's copy changed behind our back (another machine, a wiped dir): full sync.
        sync.forget(runtime, instance, code_dir)
        stats = sync.push_tree(runtime, instance, transport, tree, code_dir, progress)
        done = _start_job(runtime, instance, transport, args, payload)
    if done.returncode == EXIT_BUSY:
        other = json.loads(done.stdout).get("job_id", "?")
        if request.exclusive_machine:
            raise ConflictError(
                f"{instance.name} is busy: job {other} is running there",
                hint=f"wait for it (`runctl wait {other}`), cancel it, or pass "
                "--allow-concurrent to run both",
            )
        raise ConflictError(
            f"project {spec['project']!r} already has a running job on {instance.name}: {other}",
            hint=f"wait for it (`runctl wait {other}`), cancel it, or drop --exclusive",
        )
    if done.returncode != 0:
        raise agent.host_failure(done, instance.name, "the agent could not start the job")
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
        if len(argv) >= 2 and argv[-2] == "--resume" and spec.get("resume_from") == argv[-1]:
            del argv[-2:]  # the pair an earlier `--resume-arg` added: replaced, not repeated
        argv += ["--resume", resume_from]
    try:  # the values were never stored: read them again here
        secrets = secret_env.for_restart(spec, os.environ)
    except RunctlError as exc:
        runtime.store.add_event("job.restart_failed", old.job_id, {"error": exc.message})
        raise UsageError(f"cannot restart {old.job_id}: {exc.message}", hint=exc.hint) from None
    request = SubmitRequest(
        argv=argv,
        kind=kind,
        name=old.name,
        project=old.project,
        env={k: v for k, v in (spec.get("env") or {}).items() if k not in secrets},
        secrets=secrets,
        env_file=spec.get("env_file"),
        resume_from=resume_from,
        checkpoint_dir=old.checkpoint_dir,
        grace_s=spec.get("grace_s"),
        # The same files as the first run: an explicit --project-root again, else found again
        # from the script (or the directory a command ran from).
        project_root=root if spec.get("sync_scope") == "explicit" else None,
        cwd=root,
        includes=spec.get("includes") or (),
        yes=True,  # the first submit settled the size question; a restart cannot ask
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

# How long the host of a job in a final state gets to answer (status, logs) before runctl
# answers from what it recorded: a dead host must not hold up a question about a past job.
FINAL_PROBE_S = 3.0
# ssh failures that no retry can fix: report them at once instead of reconnecting for minutes.
_AUTH_FAILURES = (
    "Permission denied",
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "Too many authentication failures",
    "No supported authentication methods",
)
_AGENT_STATES = {"starting": JobState.RUNNING, "setup": JobState.SETUP, "missing": JobState.LOST,
                 "unknown": JobState.LOST, "pending": JobState.SETUP}  # fmt: skip


def is_settled(job: Job) -> bool:
    """Final, or lost: hosts are not polled for it again (only `status`/`reconcile` may find a
    lost job alive)."""
    return job.state.is_final or job.state == JobState.LOST


def never_started(job: Job) -> bool:
    """Settled without the agent ever starting it: its submit failed, was killed or cancelled."""
    return is_settled(job) and job.started_at is None


def check_auth(exc: RunctlError) -> None:
    """Raise an AuthError for an ssh failure that retrying cannot fix (keys, host keys)."""
    if any(marker in exc.message for marker in _AUTH_FAILURES):
        raise AuthError(exc.message, hint=exc.hint or "fix the key or host key; see `ssh -v`")


def _apply_status(runtime: Runtime, job: Job, status: dict[str, Any]) -> Job:
    raw = str(status.get("state", "unknown"))
    if job.state.is_final:
        # A recorded outcome stays: a later look that cannot find the job (its directory
        # wiped, the host rebuilt) says nothing about how it ended. Only gaps are filled.
        gaps: dict[str, Any] = {}
        if raw == str(job.state):
            if job.exit_code is None and status.get("exit_code") is not None:
                gaps["exit_code"] = int(status["exit_code"])
            if not job.ended_at and status.get("ended_at"):
                gaps["ended_at"] = status["ended_at"]
        if gaps:
            runtime.store.update_job(job.job_id, **gaps)
            return runtime.store.get_job(job.job_id)
        return job
    known = {str(s) for s in JobState}
    state = _AGENT_STATES.get(raw) or (JobState(raw) if raw in known else JobState.LOST)
    if job.state == JobState.LOST and state == JobState.LOST:
        return job  # still nothing alive there: lost stays as recorded
    fields: dict[str, Any] = {}
    if state != job.state:
        fields["state"] = state
    if status.get("exit_code") is not None and status["exit_code"] != job.exit_code:
        fields["exit_code"] = int(status["exit_code"])
    if state.is_final and status.get("ended_at") and not job.ended_at:
        fields["ended_at"] = status["ended_at"]
    if fields:
        runtime.store.update_job(job.job_id, **fields)
        if job.state == JobState.LOST:  # the host proved it alive (or ended) after all
            runtime.store.add_event("job.found", job.job_id, {"state": str(state)})
        return runtime.store.get_job(job.job_id)
    return job


def refresh(
    runtime: Runtime,
    jobs: Sequence[Job],
    *,
    last_lines: int = 0,
    statuses: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[Job], dict[str, str]]:
    """Ask each host about its unsettled jobs (hosts in parallel, one agent call per host).

    With ``last_lines`` the same call also returns each job's last log lines (the dashboard);
    ``statuses``, when given, receives the agent's answer per job id.

    Final and lost jobs are not asked about again. A ``submitting`` job whose submitting CLI
    is gone is settled from what its host knows: recorded as started (with the agent's
    state) if the agent has it, else lost with a note. Returns the refreshed jobs and, per
    unreachable host, the reason; their jobs keep the state last seen.
    """
    from runctl.core.reconcile_jobs import is_submit_in_flight, settle_submit

    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        if is_settled(job):
            continue
        if job.state == JobState.SUBMITTING and is_submit_in_flight(job):
            continue  # its CLI records how the submit went
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
            lines = ["--last-lines", str(last_lines)] if last_lines else []
            answer = agent.call_json(target.instance, transport,
                                     ["status", "--base", base, *lines, *ids],
                                     timeout=30)  # fmt: skip
            return key, answer
        except RunctlError as exc:
            return key, exc.message

    if groups:
        from concurrent.futures import ThreadPoolExecutor  # lazy: most refreshes are local

        with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
            results = list(pool.map(ask, groups))
        for key, answer in results:
            if isinstance(answer, str):
                errors[f"{key[0]}:{key[1]}"] = answer
                continue
            for job in groups[key]:
                status = answer.get(job.job_id)
                if statuses is not None and status is not None:
                    statuses[job.job_id] = status
                if job.state == JobState.SUBMITTING:
                    updated[job.job_id] = settle_submit(runtime, job, status)
                elif status is not None:
                    updated[job.job_id] = _apply_status(runtime, job, status)
    return [updated.get(j.job_id, j) for j in jobs], errors


def refresh_one(
    runtime: Runtime, job: Job, *, timeout: float | None = 60
) -> tuple[Job, dict[str, Any]]:
    """Refresh one job and return it with the agent's full status (log size, heartbeat...)."""
    target = instance_of_job(runtime, job.provider, job.instance_id)
    return refresh_on(runtime, job, target, timeout=timeout)


def refresh_on(
    runtime: Runtime, job: Job, target: Target, *, timeout: float | None = 60
) -> tuple[Job, dict[str, Any]]:
    """``refresh_one`` on a target already looked up (no second provider call)."""
    transport = target.provider.connect(target.instance)
    answer = agent.call_json(
        target.instance,
        transport,
        ["status", "--base", target.instance.remote_dir, job.job_id],
        timeout=timeout,
    )
    status: dict[str, Any] = answer.get(job.job_id, {"state": "missing"})
    return _apply_status(runtime, job, status), status


def settle_submitting(runtime: Runtime, job: Job) -> Job:
    """A ``submitting`` job as it stands now: settled from its host if its CLI is gone."""
    if job.state != JobState.SUBMITTING:
        return job
    found, _ = refresh(runtime, [job])
    return found[0]


def _no_log(job: Job, runtime: Runtime) -> NotFoundError:
    """The error for a job that never started: why (from its events), and that it has no log."""
    why = str(job.spec.get("note") or "")
    if not why:
        for event in reversed(runtime.store.list_events(job.job_id)):
            if event["kind"] == "job.submit_failed":
                why = f"its submit failed: {event['data'].get('error', '')}".rstrip(": ")
                break
    detail = f" ({why})" if why else ""
    return NotFoundError(
        f"job {job.job_id} {job.state} before it started{detail}; it has no log",
        hint=f"see `runctl status {job.job_id}`",
    )


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
    lost or repeated; gives up after ``ssh.reconnect_timeout_s`` without progress. For a job
    in a final state the host gets ``FINAL_PROBE_S``; if it does not answer, the tail cached
    when the job was last seen final is shown instead (with a note), else the ssh error.
    A log that is gone from the host is a NotFoundError (the job's state is kept).
    """
    job = settle_submitting(runtime, job)
    if job.state == JobState.SUBMITTING:
        raise NotFoundError(
            f"job {job.job_id} is still being submitted; it has no log yet",
            hint=f"try again in a moment, or `runctl wait {job.job_id}`",
        )
    if never_started(job):
        raise _no_log(job, runtime)
    settled = is_settled(job)
    whole = offset == 0 and not last_lines
    try:
        target = instance_of_job(runtime, job.provider, job.instance_id)
    except RunctlError as exc:
        if settled:
            return _from_cache(runtime, job, out, progress, exc.message, last_lines)
        raise
    transport = target.provider.connect(target.instance)
    reconnect_s = float(runtime.config.get("ssh.reconnect_timeout_s"))
    if settled:
        reconnect_s = FINAL_PROBE_S
    last_ok = time.monotonic()
    delay = 0.5
    path = agent.agent_path(target.instance, transport)
    tail = logcache.Tail()
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
        answered = True
        while True:
            if settled and not received and not _readable(fd, last_ok + reconnect_s):
                proc.kill()  # a host that does not answer: no waiting on it for a past job
                answered = False
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out.write(chunk)
            out.flush()
            tail.add(chunk)
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
            if end.get("state") == "missing":
                return _log_gone(runtime, job, target.instance.name, out, progress)
            job = _apply_status(runtime, job, end)
            if is_settled(job) and (whole or not logcache.exists(runtime, job.job_id)):
                logcache.save(runtime, job.job_id, tail.data())
            return job, end
        if b"can't open file" in err:
            agent.upload_agent(target.instance, transport)
            continue
        why = _ssh_error(err, answered, reconnect_s)
        check_auth(TransportError(f"cannot reach {target.instance.name}: {why}"))
        if time.monotonic() - last_ok > reconnect_s:
            if settled and not received:
                why = f"cannot reach {target.instance.name}: {why}"
                return _from_cache(runtime, job, out, progress, why, last_lines)
            raise TransportError(
                f"lost the connection to {target.instance.name} for over {reconnect_s:.0f}s "
                f"({why})",
                hint=f"the job keeps running; resume with `runctl logs {job.job_id} --follow`"
                if not settled
                else f"the job {job.state}; try `runctl logs {job.job_id}` again later",
            )
        progress(f"connection to {target.instance.name} lost ({why}); reconnecting "
                 f"(at byte {offset})")  # fmt: skip
        time.sleep(min(delay, max(0.0, last_ok + reconnect_s - time.monotonic())))
        delay = min(delay * 2, 5.0)


def _readable(fd: int, deadline: float) -> bool:
    """Wait until ``fd`` has data (or EOF) or ``deadline`` (monotonic) passes."""
    import select

    left = deadline - time.monotonic()
    return left > 0 and bool(select.select([fd], [], [], left)[0])


def _ssh_error(stderr: bytes, answered: bool, waited_s: float) -> str:
    """The underlying reason a tail ended early: ssh's own last words, if it said any."""
    if not answered:
        return f"no answer within {waited_s:.0f}s"
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("RUNCTL-")]
    return lines[-1] if lines else "the connection closed"


def _from_cache(
    runtime: Runtime, job: Job, out: BinaryIO, progress: Progress, why: str, last_lines: int
) -> tuple[Job, dict[str, Any]]:
    """A final job's log when its host cannot be asked: the cached tail, else the error."""
    cached = logcache.load(runtime, job.job_id)
    if cached is None:
        raise TransportError(f"{why}; job {job.job_id} {job.state} and no copy of its log is "
                             "kept here",
                             hint="try again when the host is back")  # fmt: skip
    progress(f"warning: {why}; showing the last {len(cached)} bytes of the log of "
             f"{job.job_id} ({job.state}) kept here")  # fmt: skip
    out.write(logcache.last_lines(cached, last_lines))
    out.flush()
    return job, {"state": str(job.state), "exit_code": job.exit_code, "cached": True}


def _log_gone(
    runtime: Runtime, job: Job, host: str, out: BinaryIO, progress: Progress
) -> tuple[Job, dict[str, Any]]:
    """The host has no log for the job (its directory was removed): say so, keep its state."""
    job = _apply_status(runtime, job, {"state": "missing"})
    why = f"the log of job {job.job_id} is gone from {host} ({job.job_dir} was removed)"
    if logcache.exists(runtime, job.job_id):
        return _from_cache(runtime, job, out, progress, why, 0)
    raise NotFoundError(f"{why}; the job is recorded {job.state}",
                        hint=f"see `runctl status {job.job_id}`")  # fmt: skip


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
    """Block until the job ends (or ``timeout_s`` passes; 0: look once); survives dropped
    connections. A job already final or lost answers at once, without asking its host."""
    if is_settled(job):
        return job, {"state": str(job.state), "exit_code": job.exit_code}
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    while job.state == JobState.SUBMITTING:
        job = settle_submitting(runtime, runtime.store.get_job(job.job_id))
        if job.state != JobState.SUBMITTING:
            break
        if deadline is not None and time.monotonic() >= deadline:
            return job, {"state": str(job.state)}
        time.sleep(0.2)  # its CLI is still at it
    if is_settled(job):
        return job, {"state": str(job.state), "exit_code": job.exit_code}
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
            check_auth(exc)
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if out_of_time or time.monotonic() - last_ok > reconnect_s:
                raise
            progress(f"{exc.message}; retrying")
            time.sleep(1.0)
            continue
        ended = status.get("state") in FINAL_STATES or status.get("state") == "lost"
        if ended and job.spec.get("nodes"):  # a multi-node job ends when every rank has
            left = deadline - time.monotonic() if deadline is not None else 3600.0
            status = multinode.settle(runtime, job, status, max(left, 1.0))
        job = _apply_status(runtime, job, status)
        if is_settled(job):
            return job, status
        if deadline is not None and time.monotonic() >= deadline:
            return job, status


def grace_of(runtime: Runtime, job: Job, grace_s: float | None = None) -> float:
    """The SIGTERM-to-SIGKILL grace for cancelling ``job``: given, else the job's own
    (``run --grace``, recorded in its spec), else ``jobs.grace_s``."""
    for value in (grace_s, job.spec.get("grace_s")):
        if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
            return float(value)
    return float(runtime.config.get("jobs.grace_s"))


def cancel(runtime: Runtime, job: Job, *, grace_s: float | None = None) -> Job:
    """SIGTERM the job, SIGKILL after the grace period; idempotent for finished jobs.

    A job that never started is only recorded cancelled (a submit still in flight carries
    the cancel out once it has started the job)."""
    from runctl.core.reconcile_jobs import is_submit_in_flight, settle_submit

    if job.state.is_final or never_started(job):
        return job
    grace = grace_of(runtime, job, grace_s)
    if job.state == JobState.SUBMITTING:
        flying = is_submit_in_flight(job)
        try:
            target = instance_of_job(runtime, job.provider, job.instance_id)
            transport = target.provider.connect(target.instance)
            answer = agent.call_json(target.instance, transport,
                                     ["status", "--base", target.instance.remote_dir,
                                      job.job_id], timeout=30)  # fmt: skip
            status = answer.get(job.job_id) or {"state": "missing"}
        except RunctlError:
            if not flying:
                raise  # it may run there: cannot tell without the host
            status = {"state": "missing"}
        if status.get("state") in ("missing", "unknown"):
            runtime.store.update_job(job.job_id, state=JobState.CANCELLED, ended_at=now_iso())
            runtime.store.add_event("job.cancel", job.job_id,
                                    {"grace_s": grace, "never_started": True})  # fmt: skip
            return runtime.store.get_job(job.job_id)
        if not flying:
            job = settle_submit(runtime, job, status)
            if job.state.is_final:
                return job
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
        if answer.get("error") == "private":
            raise UsageError(
                f"refusing {path!r}: it holds the job's secrets, which never leave the host",
                hint="secrets are delivered from your environment; see docs/security.md",
            )
        raise NotFoundError(f"{path} does not exist in job {job.job_id}",
                            hint=f"list files with `runctl status {job.job_id}`")  # fmt: skip
    remote_path = answer["path"]
    if dest.exists() and dest.is_dir():
        dest = dest / PurePosixPath(rel).name
    if dest.exists() and not overwrite and not answer["is_dir"]:
        raise ConflictError(f"{dest} already exists", hint="pass --force to overwrite it")
    transport.fetch(remote_path, dest, recursive=bool(answer["is_dir"]),
                    exclude=answer.get("exclude", ()))  # fmt: skip
    return dest
