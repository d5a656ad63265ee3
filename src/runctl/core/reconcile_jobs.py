"""Job records vs what the machines know: lost jobs and submits cut short by a killed CLI.

Every job recorded as submitting, setup or running on a cloud machine is checked:

* its machine is gone (terminated, or unknown to the provider) -> **lost**;
* its machine runs but the agent there has no record of it (``status`` says missing) ->
  **lost** — unless the job is still ``submitting`` and the process submitting it is alive
  (a submit in flight; reported as **in-flight**, left alone);
* still ``submitting`` although the agent has it (the CLI died between starting the agent and
  recording that) -> **started**: recorded with the agent's state, so ``status``, ``cancel``
  and ``resources cleanup`` see it;
* the machine cannot be asked (stopped, SSH fails, provider unreachable) -> **unreachable**,
  left as it is.

Each change is also written as a ``job.lost`` / ``job.started`` event.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runctl.errors import RunctlError
from runctl.models import Instance, InstanceState, Job, JobState

if TYPE_CHECKING:
    from runctl.providers.base import Provider
    from runctl.runtime import Runtime

ACTIVE = (JobState.SUBMITTING, JobState.SETUP, JobState.RUNNING)
GONE = frozenset({InstanceState.TERMINATED.value, InstanceState.TERMINATING.value})
# Jobs recorded before runctl noted the submitting process: a submit this young may be in flight.
LEGACY_SUBMIT_GRACE_S = 900.0
STATUS_TIMEOUT_S = 30.0

Key = tuple[str, str]  # (provider, instance id)


@dataclass(frozen=True)
class JobFinding:
    kind: str  # lost | started | in-flight | unreachable
    job_id: str
    provider: str
    instance_id: str
    recorded_state: str
    state: str  # the state recorded now (unchanged for in-flight/unreachable or a dry run)
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def reconcile_jobs(
    runtime: Runtime,
    platforms: Iterable[str],
    live: dict[Key, tuple[Provider, Instance]],
    *,
    apply: bool,
) -> list[JobFinding]:
    """Check the active jobs of ``platforms`` against ``live`` machines and their agents.

    ``live`` holds what the providers listed (runctl-made, not terminated). Blocks on one
    agent ``status`` call per machine with active jobs (machines in parallel).
    """
    wanted = set(platforms)
    groups: dict[Key, list[Job]] = {}
    for job in runtime.store.list_jobs(states=[s.value for s in ACTIVE]):
        if job.provider in wanted:
            groups.setdefault((job.provider, job.instance_id), []).append(job)
    findings: list[JobFinding] = []
    to_ask: dict[Key, tuple[Provider, Instance]] = {}
    for key, jobs in groups.items():
        found = live.get(key) or _lookup(runtime, key)
        if isinstance(found, str):
            findings += [_keep(job, "unreachable", found) for job in jobs]
        elif found is None:
            reason = f"its instance {key[0]}:{key[1]} is gone"
            findings += [_lose(runtime, job, reason, apply) for job in jobs]
        elif found[1].state != InstanceState.RUNNING:
            why = f"its instance is {found[1].state}; the agent cannot be asked"
            findings += [_keep(job, "unreachable", why) for job in jobs]
        else:
            to_ask[key] = found
    for key, answer in _ask_agents(to_ask, groups).items():
        for job in groups[key]:
            if isinstance(answer, str):
                findings.append(_keep(job, "unreachable", answer))
            else:
                findings += _judge(runtime, job, answer.get(job.job_id), apply)
    return findings


def _lookup(runtime: Runtime, key: Key) -> tuple[Provider, Instance] | str | None:
    """A machine missing from the listings: (provider, instance), None if gone, or why not."""
    from runctl.providers import get_provider

    record = runtime.store.get_instance_record(*key)
    if record is not None and str(record["state"]) in GONE:
        return None
    try:
        provider = get_provider(key[0], runtime)
        instance = provider.get_instance(key[1])
    except RunctlError as exc:
        return f"cannot ask {key[0]} about {key[1]}: {exc.message}"
    if instance is None or str(instance.state) in GONE:
        return None
    return provider, instance


def _ask_agents(
    targets: dict[Key, tuple[Provider, Instance]], groups: dict[Key, list[Job]]
) -> dict[Key, dict[str, Any] | str]:
    """Agent ``status`` for the jobs of each machine: its answer, or why it could not be had."""
    from runctl.core import agent

    def ask(key: Key) -> tuple[Key, dict[str, Any] | str]:
        provider, instance = targets[key]
        ids = [j.job_id for j in groups[key]]
        try:
            transport = provider.connect(instance)
            answer = agent.call_json(instance, transport,
                                     ["status", "--base", instance.remote_dir, *ids],
                                     timeout=STATUS_TIMEOUT_S)  # fmt: skip
        except RunctlError as exc:
            return key, f"cannot ask the agent on {key[0]}:{key[1]}: {exc.message}"
        return key, answer if isinstance(answer, dict) else "unexpected agent answer"

    if not targets:
        return {}
    from concurrent.futures import ThreadPoolExecutor  # lazy: start-up of `jobs`/`status`

    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        return dict(pool.map(ask, targets))


def _judge(
    runtime: Runtime, job: Job, status: dict[str, Any] | None, apply: bool
) -> list[JobFinding]:
    state = (status or {}).get("state", "missing")
    if state == "missing":
        if job.state == JobState.SUBMITTING and is_submit_in_flight(job):
            return [_keep(job, "in-flight", "being submitted by a live runctl process")]
        if job.state == JobState.SUBMITTING:
            return [_lose(runtime, job, NEVER_STARTED, apply)]
        return [_lose(runtime, job, "the agent on its instance has no record of it", apply)]
    if job.state != JobState.SUBMITTING:
        if apply and status is not None:  # the agent knows it: record its state (ended?)
            from runctl.core.jobs import _apply_status

            _apply_status(runtime, job, status)
        return []
    assert status is not None
    return [_start(runtime, job, status, apply)]


NEVER_STARTED = "the submitting runctl was killed before the job started"


def settle_submit(runtime: Runtime, job: Job, status: dict[str, Any] | None) -> Job:
    """A ``submitting`` job whose CLI is gone, given what its host's agent says about it:
    recorded with the agent's state if it started, else lost with a note. Returns it now."""
    state = (status or {}).get("state", "missing")
    if state in ("missing", "unknown"):
        note_lost(runtime, job, NEVER_STARTED, by="refresh")
    else:
        assert status is not None
        _start(runtime, job, status, True)
    return runtime.store.get_job(job.job_id)


def note_lost(runtime: Runtime, job: Job, reason: str, *, by: str) -> None:
    """Record ``job`` lost, with ``reason`` kept in its spec (shown by `status`) and an event."""
    spec = {**job.spec, "note": reason}
    runtime.store.update_job(job.job_id, state=JobState.LOST, spec=spec)
    runtime.store.add_event("job.lost", job.job_id, {"reason": reason, "by": by})


def _keep(job: Job, kind: str, reason: str) -> JobFinding:
    return JobFinding(kind, job.job_id, job.provider, job.instance_id, str(job.state),
                      str(job.state), reason)  # fmt: skip


def _lose(runtime: Runtime, job: Job, reason: str, apply: bool) -> JobFinding:
    if apply:
        note_lost(runtime, job, reason, by="reconcile")
    return JobFinding("lost", job.job_id, job.provider, job.instance_id, str(job.state),
                      str(JobState.LOST) if apply else str(job.state), reason)  # fmt: skip


def _start(runtime: Runtime, job: Job, status: dict[str, Any], apply: bool) -> JobFinding:
    """A submit whose CLI died after the agent started the job: record what the agent says."""
    from runctl.core.jobs import _apply_status  # the mapping `refresh` uses
    from runctl.state.db import now_iso

    reason = "the agent started it but the submitting CLI never recorded that"
    now = str(job.state)
    if apply:
        started = status.get("started_at") or status.get("created_at") or now_iso()
        runtime.store.update_job(job.job_id, state=JobState.RUNNING, started_at=started,
                                 pid=status.get("agent_pid"))  # fmt: skip
        running = replace(job, state=JobState.RUNNING)
        now = str(_apply_status(runtime, running, status).state)
        runtime.store.add_event("job.started", job.job_id, {"reason": reason, "state": now})
    return JobFinding("started", job.job_id, job.provider, job.instance_id, str(job.state),
                      now, reason)  # fmt: skip


def submitter() -> dict[str, Any]:
    """Who is submitting: recorded with the job so that a later command can tell a submit in
    flight from one whose CLI was killed (pid + the kernel's start time of that process, so a
    reused pid is not mistaken for it)."""
    who: dict[str, Any] = {"pid": os.getpid(), "host": _hostname()}
    start = _start_ticks(os.getpid())
    if start is not None:
        who["start_ticks"] = start
        who["boot_id"] = _boot_id()
        if os.getpgid(0) == os.getpid():  # its own process group (as a shell starts it)
            who["group"] = True
    return who


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    try:
        return None if fields[0] == "Z" else int(fields[19])
    except (IndexError, ValueError):
        return None


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is in process group ``pgid`` (Linux /proc)."""
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return False
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            return True
    return False


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def is_submit_in_flight(job: Job, now: datetime | None = None) -> bool:
    """Whether the process that is submitting ``job`` may still be at it."""
    from runctl.core.costs import parse_iso

    created = parse_iso(job.created_at)
    who = job.spec.get("submitted_by")
    if isinstance(who, dict) and who.get("host") == _hostname():
        pid = int(who.get("pid") or 0)
        if who.get("start_ticks") is not None:
            # Exact: the same process (same pid, same start time, same boot), not a reuse.
            if who.get("boot_id") not in ("", None, _boot_id()):
                return False
            if _start_ticks(pid) == int(who["start_ticks"]):
                return True
            # Killed: what it started (ssh running `agent start`, a sync) may still be at
            # work in its process group; the job's fate is known once they are gone too.
            return bool(who.get("group")) and _group_alive(pid)
        return _is_alive(pid, created.timestamp())
    # Older records, or submitted from another machine: only time tells.
    age_s = ((now or datetime.now(UTC)) - created).total_seconds()
    return age_s < LEGACY_SUBMIT_GRACE_S


def _is_alive(pid: int, since: float) -> bool:
    """Whether ``pid`` runs, is no zombie, and is not a newer process that reused the pid."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:  # Linux: the process's state and start time (no /proc, as on macOS: trust the pid)
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[-1].split()
        with open("/proc/stat") as fh:
            boot = next(float(ln.split()[1]) for ln in fh if ln.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return True
    if fields[0] == "Z":
        return False  # killed, not yet reaped by its parent: submitting nothing
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started <= since + 2.0  # btime has whole seconds


def _hostname() -> str:
    import socket  # lazy: most commands never record or check a submitter

    return socket.gethostname()
