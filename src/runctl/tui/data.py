"""What the dashboard shows, gathered without textual: pure functions over a Runtime.

``load`` reads only the local state database, so the first frame is immediate. Everything that
talks to hosts or provider APIs (``refresh_jobs``, ``last_lines``, ``probe``, ``act_on_machine``)
blocks and is run by the app in thread workers, each with its own ``worker_runtime`` (a fresh
state connection, so no connection is shared between threads mid-transaction).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from runctl.core import costs, telemetry
from runctl.core.costs import CostSummary
from runctl.errors import (
    AuthError,
    ConfigError,
    NotSupportedError,
    RunctlError,
    TransportError,
)
from runctl.models import Job, JobState
from runctl.runtime import Runtime

_TYPE_KEYS = ("instance_type", "gpu", "profile")
RECENT_JOBS = 50  # rows in the jobs pane (unfinished jobs are always among them)
# One snapshot (`top --json`) does not wait longer than this on a machine that does not answer.
PROBE_TIMEOUT_S = 3.0  # as long as a finished job's host gets (core.jobs.FINAL_PROBE_S)
LINES_ASKED = 2  # log lines asked per job; the last non-empty one is shown
PROVIDER_RETRY_S = 60.0  # the dashboard retries a provider that cannot be used this often


@dataclass(frozen=True)
class MachineRow:
    """An instance runctl created, a registered SSH host, or this machine."""

    key: str  # "provider:instance_id": the target spelling, unique
    provider: str
    instance_id: str
    name: str
    type: str
    state: str
    hourly_usd: float | None
    total_usd: float | None  # accumulated; None for hosts (not tracked)
    is_instance: bool  # a recorded provider instance (stop/terminate apply)


@dataclass(frozen=True)
class JobRow:
    job_id: str
    state: str
    on: str  # "provider:instance_id" (the machine key)
    command: str
    created_at: str
    runtime_s: float | None
    exit_code: int | None
    last_line: str = ""


@dataclass
class Snapshot:
    at: str
    machines: list[MachineRow]
    jobs: list[JobRow]
    costs: CostSummary
    telemetry: dict[str, dict[str, Any]] = field(default_factory=dict)  # machine key -> data
    errors: dict[str, str] = field(default_factory=dict)  # machine key -> why unreachable

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "machines": [asdict(m) for m in self.machines],
            "jobs": [asdict(j) for j in self.jobs],
            "costs": self.costs.to_json(),
            "telemetry": self.telemetry,
            "errors": self.errors,
        }


@contextmanager
def worker_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """A Runtime with its own state connection, for one blocking call in a worker thread."""
    own = Runtime(config=runtime.config, home=runtime.home, json=runtime.json)
    try:
        yield own
    finally:
        if own._store is not None:
            own._store.db.close()


def machine_key(provider: str, instance_id: str) -> str:
    return f"{provider}:{instance_id}"


def job_on(job: Job) -> str:
    return machine_key(job.provider, job.instance_id)


def load(runtime: Runtime, now: datetime | None = None) -> Snapshot:
    """Everything the state database knows, without contacting any host (fast)."""
    moment = now or datetime.now(UTC)
    store = runtime.store
    budget = float(runtime.config.get("costs.daily_budget_usd") or 0.0)
    summary = costs.summarize(store, daily_budget_usd=budget, now=moment)
    machines = [MachineRow(key="local:local", provider="local", instance_id="local",
                           name="local", type="this machine", state="running",
                           hourly_usd=None, total_usd=None, is_instance=False)]  # fmt: skip
    for host in store.list_hosts():
        machines.append(MachineRow(
            key=machine_key("ssh", host.name), provider="ssh", instance_id=host.name,
            name=host.name, type=host.target.destination, state="registered",
            hourly_usd=host.hourly_usd, total_usd=None, is_instance=False,
        ))  # fmt: skip
    records = {(r["provider"], r["instance_id"]): r for r in store.list_instance_records()}
    for cost in summary.instances:
        data = records[(cost.provider, cost.instance_id)].get("data") or {}
        kind = next((str(data[k]) for k in _TYPE_KEYS if data.get(k)), "")
        machines.append(MachineRow(
            key=machine_key(cost.provider, cost.instance_id), provider=cost.provider,
            instance_id=cost.instance_id, name=cost.name, type=kind, state=cost.state,
            hourly_usd=cost.hourly_usd, total_usd=cost.total_usd, is_instance=True,
        ))  # fmt: skip
    jobs = [job_row(j, moment) for j in store.list_jobs(limit=RECENT_JOBS)]
    return Snapshot(at=summary.at, machines=machines, jobs=jobs, costs=summary)


def job_row(job: Job, now: datetime, last_line: str = "") -> JobRow:
    import shlex

    return JobRow(
        job_id=job.job_id,
        state=str(job.state),
        on=job_on(job),
        command=shlex.join(job.argv),
        created_at=job.created_at,
        runtime_s=costs.elapsed_s(job.started_at or job.created_at, job.ended_at, now),
        exit_code=job.exit_code,
        last_line=last_line,
    )


def live_machines(snapshot: Snapshot) -> list[MachineRow]:
    """Machines worth probing: this one, registered hosts, instances that run now."""
    return [m for m in snapshot.machines if not m.is_instance or m.state == "running"]


# ------------------------------------------------------------------- blocking (workers)


def refresh_jobs(runtime: Runtime, lines: dict[str, str] | None = None) -> dict[str, str]:
    """Ask hosts about the unfinished recent jobs (updates state): one agent call per host,
    which also brings each job's last log lines (into ``lines``, when given).

    Finished jobs are not asked about. Returns unreachable machine -> why.
    """
    from runctl.core.jobs import refresh

    found = runtime.store.list_jobs(limit=RECENT_JOBS)
    statuses: dict[str, dict[str, Any]] = {}
    _, errors = refresh(runtime, found, last_lines=LINES_ASKED, statuses=statuses)
    if lines is not None:
        for job_id, status in statuses.items():
            if "last_lines" in status:
                lines[job_id] = _last_line(str(status["last_lines"]))
    return errors


def last_lines(
    runtime: Runtime, job_ids: Sequence[str], errors: dict[str, str] | None = None
) -> dict[str, str]:
    """The last non-empty log line of each job (jobs on unreachable hosts are left out).

    A finished job's line comes from the log tail kept here; hosts are asked only for the
    jobs that have none, one agent call per host, and only hosts that can still answer (this
    machine, registered hosts, instances recorded running): the rest is left blank. A host
    that fails is noted in ``errors``.
    """
    from runctl.core import logcache
    from runctl.core.jobs import is_settled, never_started

    failed = errors if errors is not None else {}
    lines: dict[str, str] = {}
    ask: dict[tuple[str, str], list[Job]] = {}
    for job_id in job_ids:
        job = runtime.store.get_job(job_id)
        if job.state == JobState.SUBMITTING or never_started(job) or job_on(job) in failed:
            continue
        cached = logcache.load(runtime, job_id) if is_settled(job) else None
        if cached is not None:
            lines[job_id] = _last_line(cached.decode(errors="replace"))
        elif _answers(runtime, job):
            ask.setdefault((job.provider, job.instance_id), []).append(job)
    down: set[str] = set()  # providers that cannot be used at all (no key, no region)
    for key, jobs in ask.items():
        if key[0] in down:
            continue
        try:
            answer = _ask_host(runtime, key, [j.job_id for j in jobs])
        except RunctlError as exc:
            if isinstance(exc, TransportError):
                failed[machine_key(*key)] = exc.message
            elif provider_down(exc):
                down.add(key[0])
            continue
        for job_id, status in answer.items():
            if isinstance(status, dict) and "last_lines" in status:
                lines[job_id] = _last_line(str(status["last_lines"]))
    return lines


def _answers(runtime: Runtime, job: Job) -> bool:
    """Whether the job's machine may still answer: recorded terminated/stopped ones cannot."""
    if job.provider in ("local", "ssh", "slurm"):
        return True
    record = runtime.store.get_instance_record(job.provider, job.instance_id)
    return record is None or record.get("state") == "running"


def _ask_host(runtime: Runtime, key: tuple[str, str], job_ids: list[str]) -> dict[str, Any]:
    """One agent ``status`` call on a machine for ``job_ids``, with their last log lines
    (finished jobs: a host that does not answer soon is not waited on)."""
    from runctl.core import agent
    from runctl.core.jobs import FINAL_PROBE_S
    from runctl.core.targets import instance_of_job

    target = instance_of_job(runtime, *key)
    transport = target.provider.connect(target.instance)
    args = ["status", "--base", target.instance.remote_dir, "--last-lines", str(LINES_ASKED)]
    answer: dict[str, Any] = agent.call_json(target.instance, transport, [*args, *job_ids],
                                             timeout=FINAL_PROBE_S)  # fmt: skip
    return answer


def _last_line(text: str) -> str:
    rows = text.rstrip().splitlines()
    return rows[-1].strip() if rows else ""


def probe(
    runtime: Runtime, provider: str, instance_id: str, *, timeout: float = 60
) -> dict[str, Any]:
    """CPU, memory, disks and GPUs of one machine in one round trip (``core.telemetry``)."""
    from runctl.core.targets import instance_of_job

    target = instance_of_job(runtime, provider, instance_id)
    transport = target.provider.connect(target.instance)
    done = transport.run(["sh", "-c", telemetry.PROBE], timeout=timeout)
    if done.returncode != 0 and not done.stdout:
        detail = done.stderr.decode(errors="replace").strip()[-200:]
        raise TransportError(f"telemetry probe failed on {target.instance.name}: {detail}")
    data = telemetry.parse(done.text)
    data.pop("processes", None)  # the dashboard has no room for them
    return data


def provider_down(exc: RunctlError) -> bool:
    """A probe failure that every machine of the provider shares (no API key, no region):
    the others are not asked again until ``PROVIDER_RETRY_S`` has passed."""
    return isinstance(exc, (ConfigError, AuthError))


def cancel_job(runtime: Runtime, job_id: str) -> str:
    """Cancel a job (SIGTERM, grace, SIGKILL); returns its state afterwards."""
    from runctl.core.jobs import cancel

    return str(cancel(runtime, runtime.store.get_job(job_id)).state)


def machine_action_reason(runtime: Runtime, machine: MachineRow, action: str) -> str | None:
    """Why ``action`` ("stop" / "terminate") cannot apply to ``machine``; None if it can."""
    from runctl.providers import get_provider
    from runctl.providers.base import SupportsStop

    provider = get_provider(machine.provider, runtime)
    reasons = provider.unsupported
    if not machine.is_instance:
        return reasons.get(action) or reasons.get("stop") or f"{machine.name} is not an instance"
    able = (
        isinstance(provider, SupportsStop)
        if action == "stop"
        else callable(getattr(provider, "terminate_instance", None))
    )
    if able:
        return None
    return reasons.get(action) or f"{machine.provider} cannot {action} instances"


def act_on_machine(runtime: Runtime, machine: MachineRow, action: str) -> str:
    """Stop or terminate an instance through its provider and record the state seen after."""
    from runctl.core.cloud import observe, record_gone
    from runctl.providers import get_provider
    from runctl.providers.base import SupportsStop

    reason = machine_action_reason(runtime, machine, action)
    if reason is not None:
        raise NotSupportedError(f"cannot {action} {machine.name}: {reason}")
    provider = get_provider(machine.provider, runtime)
    if action == "stop":
        assert isinstance(provider, SupportsStop)
        provider.stop_instance(machine.instance_id)
    else:
        provider.terminate_instance(machine.instance_id)  # type: ignore[attr-defined]
    seen = provider.get_instance(machine.instance_id)
    if seen is None:
        record_gone(runtime, machine.provider, machine.instance_id)
        return "terminated"
    observe(runtime, seen)
    return str(seen.state)


def _quiet(_message: str) -> None:
    """Progress sink for core calls made from the dashboard (it has no stderr to write to)."""


def collect(
    runtime: Runtime, *, max_workers: int = 8, probe_timeout: float = PROBE_TIMEOUT_S
) -> Snapshot:
    """One complete snapshot, blocking: refreshed jobs, last log lines, every machine's probe.

    A machine that does not answer within ``probe_timeout`` is reported under ``errors``
    (finished jobs never wait on their hosts: ``refresh`` skips them, their lines come from
    the kept log tails)."""
    from concurrent.futures import ThreadPoolExecutor

    snapshot = load(runtime)
    down: dict[str, str] = {}  # provider -> why it cannot be used (no key, no region)

    def one(machine: MachineRow) -> tuple[str, dict[str, Any] | str]:
        if machine.provider in down:
            return machine.key, down[machine.provider]
        with worker_runtime(runtime) as rt:
            try:
                return machine.key, probe(rt, machine.provider, machine.instance_id,
                                          timeout=probe_timeout)  # fmt: skip
            except RunctlError as exc:
                if provider_down(exc):
                    down[machine.provider] = exc.message
                return machine.key, exc.message

    # The probes (which sample CPU over half a second) run while the jobs are refreshed.
    machines = live_machines(snapshot)
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(machines)))) as pool:
        probes = pool.map(one, machines)
        lines: dict[str, str] = {}
        errors = refresh_jobs(runtime, lines)  # running jobs' lines come with their state
        wanted = [j.job_id for j in snapshot.jobs if j.on not in errors and j.job_id not in lines]
        lines.update(last_lines(runtime, wanted, errors))
        for key, found in probes:
            if isinstance(found, str):
                snapshot.errors[key] = found
            elif key not in errors:
                snapshot.telemetry[key] = found
    snapshot.errors.update(errors)  # a host its jobs could not reach is reported as such
    moment = datetime.now(UTC)
    snapshot.jobs = [
        job_row(runtime.store.get_job(j.job_id), moment, lines.get(j.job_id, ""))
        for j in snapshot.jobs
    ]
    return snapshot
