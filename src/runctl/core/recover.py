"""Managed recovery: keep a job running across spot interruptions and vanished machines.

A controller (``runctl workflow train --recover`` in the foreground, ``runctl recover JOB`` in
the foreground or ``--daemon``) polls the job's machine and agent. When the job ends
``preempted`` (the agent saw a spot notice, ended the job and copied its checkpoints to the
store), or the machine is gone, stopped, lost its agent or stays unreachable, it:

1. terminates the old machine and waits until the provider reports it gone,
2. launches a replacement per policy (``same``; ``on-demand``; ``other-az``, ``other-region``
   on AWS) through ``core.launchers``,
3. arms the host watchdog again (spot notices, timeouts), and
4. resubmits the job with the same name and checkpoint store, so the agent restores the
   store and starts it with RUNCTL_RESUME_FROM set to the newest checkpoint.

Each step is an event ``recover.*`` on the root job. Never two machines at once: one
controller per job (an flock on ``RUNCTL_HOME/recover/<root job>.lock``), and the old machine
is gone before the new one is created. The chain of attempts lives in the job specs:
``spec["recover"] = {"max_restarts", "policy", "provider", "launch", "watchdog", "attempt",
"root_job"}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from runctl.core import agent, launchers, secret_env
from runctl.core import jobs as core_jobs
from runctl.core.targets import Target
from runctl.errors import (
    ConflictError,
    NotFoundError,
    ProviderError,
    RunctlError,
    TransportError,
    UsageError,
)
from runctl.models import Instance, InstanceState, Job, JobState
from runctl.perms import private_dir
from runctl.providers.base import Provider
from runctl.runtime import Runtime
from runctl.state.db import now_iso

Progress = Callable[[str], None]
POLICIES = ("same", "on-demand", "other-az", "other-region")
_AWS_ONLY = frozenset({"other-az", "other-region"})
#: job states after which there is nothing to recover
DONE_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
_DOWN = frozenset({InstanceState.STOPPED, InstanceState.STOPPING})
LAUNCH_TRIES = 3


# ------------------------------------------------------------------------------ spec


def recover_spec(
    provider: str,
    launch: dict[str, Any],
    *,
    max_restarts: int,
    policy: str = "same",
    watchdog: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``spec["recover"]`` of a job's first attempt; UsageError for an impossible policy."""
    if provider not in launchers.CLOUDS:
        raise UsageError(
            f"recovery needs a machine runctl can replace; {provider} machines are not",
            hint="run on --on aws|runpod|lyceum (runctl creates the machine)",
        )
    if policy not in POLICIES:
        raise UsageError(f"unknown recovery policy {policy!r}", hint=f"use {', '.join(POLICIES)}")
    if policy in _AWS_ONLY and provider != "aws":
        raise UsageError(f"policy {policy} needs AWS", hint="use same or on-demand")
    if policy == "other-region" and len(launch.get("regions") or []) < 2:
        raise UsageError(
            "policy other-region needs the regions to use",
            hint="pass --regions us-east-1,us-west-2 (the first is where it starts)",
        )
    if max_restarts < 0:
        raise UsageError("--max-restarts must be 0 or more")
    return {
        "max_restarts": max_restarts,
        "policy": policy,
        "provider": provider,
        "launch": dict(launch),
        "watchdog": watchdog,
        "attempt": 0,
    }


def launch_of_instance(runtime: Runtime, provider: str, instance_id: str) -> dict[str, Any]:
    """Launch options that make a machine like a recorded one (for ``runctl recover JOB`` on a
    job started with plain ``run``); UsageError when runctl did not create it."""
    record = runtime.store.get_instance_record(provider, instance_id)
    if provider not in launchers.CLOUDS or record is None:
        raise UsageError(
            f"{provider}:{instance_id} is not a machine runctl created, so it cannot be replaced",
            hint="start the job with `runctl workflow train --recover --on aws|runpod|lyceum`",
        )
    data, spot = record.get("data") or {}, bool(record.get("spot"))
    if provider == "aws":
        return {
            "instance_type": data.get("instance_type"),
            "spot": spot,
            "region": data.get("region"),
            "project": (record.get("tags") or {}).get("runctl:project"),
        }
    if provider == "runpod":
        return {
            "gpu": data.get("gpu"),
            "gpu_count": data.get("gpu_count") or 1,
            "image": data.get("image"),
            "spot": spot,
        }
    return {"profile": data.get("profile"), "gpu_count": data.get("gpu_count") or 1, "spot": spot}


def root_of(runtime: Runtime, job: Job) -> Job:
    """The first attempt of ``job``'s recovery chain (the job itself if it has none)."""
    root_id = (job.spec.get("recover") or {}).get("root_job")
    return runtime.store.get_job(root_id) if root_id and root_id != job.job_id else job


def attempts(runtime: Runtime, root: Job) -> list[Job]:
    """Every attempt of ``root``'s chain, first to latest (of a number tried twice because
    a submit failed, the later one)."""
    latest: dict[int, Job] = {}
    found = sorted(
        (j for j in runtime.store.list_jobs(project=root.project)
         if (j.spec.get("recover") or {}).get("root_job") == root.job_id
         and j.job_id != root.job_id),
        key=lambda j: (int(j.spec["recover"].get("attempt", 0)), j.created_at),
    )  # fmt: skip
    for job in found:
        latest[int(job.spec["recover"].get("attempt", 0))] = job
    return [root, *latest.values()]


def enable(runtime: Runtime, job: Job, spec: dict[str, Any]) -> Job:
    """Store ``spec`` (from ``recover_spec``) as ``job``'s recovery settings."""
    recover = {**spec, "root_job": job.job_id, "attempt": 0}
    runtime.store.update_job(job.job_id, spec={**job.spec, "recover": recover})
    runtime.store.add_event(
        "recover.enabled",
        job.job_id,
        {k: recover[k] for k in ("max_restarts", "policy", "provider")},
    )
    return runtime.store.get_job(job.job_id)


# ------------------------------------------------------------------------------ lock


def lock_path(runtime: Runtime, root_job: str) -> Any:
    return runtime.home / "recover" / f"{root_job}.lock"


def _managed_error(root_job: str, holder: object) -> ConflictError:
    return ConflictError(
        f"job {root_job} is already managed by a recovery controller (pid {holder})",
        hint="only one controller may replace its machines; stop that one first",
    )


def refuse_if_managed(runtime: Runtime, root_job: str) -> None:
    """ConflictError when a controller already manages ``root_job``."""
    holder = lock_holder(runtime, root_job)
    if holder is not None:
        raise _managed_error(root_job, holder)


@contextlib.contextmanager
def controller_lock(runtime: Runtime, root_job: str) -> Iterator[None]:
    """Hold the one-controller-per-job lock; ConflictError naming the holder if taken."""
    path = lock_path(runtime, root_job)
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise _managed_error(root_job, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def lock_holder(runtime: Runtime, root_job: str) -> int | None:
    """The pid of the controller holding ``root_job``'s lock, or None when nobody does."""
    path = lock_path(runtime, root_job)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        return None
    finally:
        os.close(fd)


# ------------------------------------------------------------------------ controller


@dataclass
class Outcome:
    """How a controller run ended: ``finished`` (the job ended by itself), ``gave-up``
    (interrupted with no restarts left)."""

    root_job: str
    job: Job
    result: str
    restarts: int
    reason: str | None = None  # what interrupted the last attempt (gave-up)
    jobs: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)  # provider:id, every machine used

    def to_json(self) -> dict[str, Any]:
        return {
            "root_job": self.root_job,
            "job_id": self.job.job_id,
            "result": self.result,
            "state": str(self.job.state),
            "exit_code": self.job.exit_code,
            "restarts": self.restarts,
            "reason": self.reason,
            "jobs": self.jobs,
            "instances": self.instances,
        }


@dataclass
class Controller:
    """Polls the latest attempt of a job and replaces its machine when it is interrupted.

    With ``out`` the job's log is copied there as it grows (each attempt from its start).
    ``on_instance`` hears of every machine the controller creates, as soon as it exists.
    """

    runtime: Runtime
    root: Job
    progress: Progress
    poll_s: float = 5.0
    out: BinaryIO | None = None
    max_restarts: int | None = None  # None: the job's spec
    unreachable_timeout_s: float = 120.0
    on_instance: Callable[[Instance], None] | None = None
    sleep: Callable[[float], None] = time.sleep
    _providers: dict[str, Provider] = field(default_factory=dict, repr=False)
    _offset: int = 0
    _pending: Instance | None = None  # created by the launch in progress
    _why: str = ""  # why the last poll could not reach the machine

    @property
    def spec(self) -> dict[str, Any]:
        recover: dict[str, Any] = self.root.spec.get("recover") or {}
        return recover

    def run(self) -> Outcome:
        """Poll until the job ends or restarts run out; blocks. Caller holds the lock."""
        chain = attempts(self.runtime, self.root)
        job = chain[-1]
        limit = self.max_restarts
        if limit is None:
            limit = int(self.spec.get("max_restarts", 0))
        restarts = len(chain) - 1
        self._event("recover.started", job, max_restarts=limit, policy=self.spec.get("policy"))
        unreachable_since: float | None = None
        while True:
            job, verdict = self.check(job)
            if verdict != "unreachable":
                unreachable_since = None
            elif unreachable_since is None:
                unreachable_since = time.monotonic()
                wait_s = self.unreachable_timeout_s
                self.progress(f"warning: {self._why}; retrying for {wait_s:.0f}s")
                verdict = "running"
            elif time.monotonic() - unreachable_since < self.unreachable_timeout_s:
                verdict = "running"  # a blip must not cost a machine and its progress
            if verdict == "running":
                self.sleep(self.poll_s)
                continue
            if verdict == "done":
                self._event("recover.finished", job, state=str(job.state),
                            exit_code=job.exit_code, restarts=restarts)  # fmt: skip
                return self._outcome(job, "finished", restarts)
            self._event("recover.interrupted", job, reason=verdict,
                        instance=f"{job.provider}:{job.instance_id}")  # fmt: skip
            stop = self._why_stop(job, verdict, restarts, limit)
            if stop is not None:
                self.progress(f"{job.job_id} {verdict}; {stop}")
                self._event("recover.gave_up", job, reason=verdict, why=stop,
                            restarts=restarts)  # fmt: skip
                return self._outcome(job, "gave-up", restarts, reason=verdict)
            restarts += 1
            self.progress(f"{job.job_id} {verdict}: recovering (restart {restarts}/{limit}) ...")
            job = self.replace(job, verdict, restarts)
            unreachable_since = None

    def _why_stop(self, job: Job, verdict: str, restarts: int, limit: int) -> str | None:
        """Why ``job`` is not restarted after ``verdict``; None when it is."""
        if restarts >= limit:
            return f"no restarts left ({restarts}/{limit})"
        try:  # before a replacement machine is paid for: its secrets are read again here
            secret_env.for_restart(job.spec, os.environ)
        except RunctlError as exc:
            return exc.message
        budget = job.spec.get("budget_usd")
        if budget is not None:
            chain = attempts(self.runtime, self.root)
            spent = spent_usd(self.runtime, [f"{j.provider}:{j.instance_id}" for j in chain])
            if spent >= float(budget):
                return f"its budget is spent (${spent:.2f} of ${float(budget):.2f})"
        deadline_s = (self.spec.get("watchdog") or {}).get("max_duration_s")
        if verdict == "vanished" and deadline_s and self._age_s(job) >= float(deadline_s):
            # The host's watchdog ended it on purpose (--max-duration): not an interruption.
            return f"its machine reached --max-duration ({float(deadline_s):.0f}s)"
        return None

    def _age_s(self, job: Job) -> float:
        """Seconds since runctl created the job's machine (0 when it did not)."""
        from datetime import UTC, datetime

        from runctl.core.costs import elapsed_s

        record = self.runtime.store.get_instance_record(job.provider, job.instance_id) or {}
        return elapsed_s(record.get("created_at"), None, datetime.now(UTC)) or 0.0

    # -------------------------------------------------------------------- observing

    def check(self, job: Job) -> tuple[Job, str]:
        """One poll: (the job as now known, verdict). Verdicts: running, done, preempted,
        vanished (gone or stopped), lost (agent gone), unreachable."""
        provider = self.provider_for(job)
        try:
            instance = provider.get_instance(job.instance_id)
        except ProviderError as exc:
            self._why = f"{provider.name} did not answer ({exc.message})"
            return job, "unreachable"
        if launchers.is_gone(instance) or (instance is not None and instance.state in _DOWN):
            if job.state in DONE_STATES:
                return job, "done"  # it ended before its machine went away
            return self._mark_lost(job), "vanished"
        assert instance is not None
        try:
            job, _status = core_jobs.refresh_on(self.runtime, job, Target(provider, instance))
            self._copy_log(job, provider, instance)
        except TransportError as exc:
            self._why = exc.message
            return job, "unreachable"
        if job.state == JobState.PREEMPTED:
            return job, "preempted"
        if job.state in DONE_STATES:
            return job, "done"
        if job.state == JobState.LOST:
            return job, self._lost_or_vanished(provider, job)
        return job, "running"

    def _lost_or_vanished(self, provider: Provider, job: Job) -> str:
        """A dead agent is often the first sign of a machine going away: ask again, so the
        reason recorded is the machine (vanished) rather than its agent (lost)."""
        with contextlib.suppress(ProviderError):
            instance = provider.get_instance(job.instance_id)
            if launchers.is_gone(instance) or (instance is not None and instance.state in _DOWN):
                return "vanished"
        return "lost"

    def _copy_log(self, job: Job, provider: Provider, instance: Instance) -> None:
        """Append what the log gained since the last poll to ``out`` (one round trip)."""
        if self.out is None:
            return
        transport = provider.connect(instance)
        done = agent.call(
            instance, transport, ["tail", "--job-dir", job.job_dir, "--offset", str(self._offset)]
        )
        if done.returncode == 0 and done.stdout:
            self.out.write(done.stdout)
            self.out.flush()
            self._offset += len(done.stdout)

    def _mark_lost(self, job: Job) -> Job:
        if job.state.is_final:
            return job
        self.runtime.store.update_job(job.job_id, state=JobState.LOST, ended_at=now_iso())
        return self.runtime.store.get_job(job.job_id)

    def provider_for(self, job: Job) -> Provider:
        """One provider object per name (AWS: the job's recorded region is used per call)."""
        if job.provider not in self._providers:
            options = {} if job.provider != "aws" else {"region": None}
            self._providers[job.provider] = launchers.make_provider(
                self.runtime, job.provider, options, self.progress
            )
        return self._providers[job.provider]

    # -------------------------------------------------------------------- replacing

    def replace(self, job: Job, reason: str, restart: int) -> Job:
        """Terminate ``job``'s machine, launch another, arm its watchdog, resubmit there."""
        provider = self.provider_for(job)
        timeout = float(self.runtime.config.get(f"{job.provider}.wait_timeout_s"))
        old_record = self.runtime.store.get_instance_record(job.provider, job.instance_id) or {}
        self.progress(f"terminating {job.provider}:{job.instance_id} ...")
        launchers.terminate_verified(
            self.runtime, provider, job.instance_id, timeout_s=timeout, progress=self.progress
        )
        self._event("recover.terminated", job, instance=f"{job.provider}:{job.instance_id}")
        instance = self._launch(job, old_record, restart)
        target = Target(self.provider_for(job), instance)
        self._arm_watchdog(job, target)
        self._offset = 0
        new = self._resubmit(job, target, restart)
        self._event(
            "recover.resubmitted",
            new,
            attempt=restart,
            previous=job.job_id,
            reason=reason,
            instance=f"{new.provider}:{new.instance_id}",
        )
        self.progress(
            f"restarted as {new.job_id} on {new.provider}:{new.instance_id} "
            f"(restart {restart}; resumes from the newest checkpoint)"
        )
        return new

    def _resubmit(self, job: Job, target: Target, restart: int) -> Job:
        """Submit ``job`` again on ``target``, linked into the chain from its first record."""
        recover = {**self.spec, "root_job": self.root.job_id, "attempt": restart}
        for attempt in range(1, LAUNCH_TRIES + 1):
            try:
                submitted = core_jobs.resubmit(
                    self.runtime, job, resume_from=None, resume_arg=False,
                    progress=self.progress, target=target, spec_extra={"recover": recover},
                )  # fmt: skip
                return submitted.job
            except TransportError as exc:  # a machine that just booted may still be settling
                self._event("recover.resubmit_failed", job, error=exc.message, submit_try=attempt)
                if attempt == LAUNCH_TRIES:
                    raise
                self.progress(f"resubmitting failed ({exc.message}); retrying")
                self.sleep(self.poll_s)
        raise AssertionError("unreachable")

    def _launch(self, job: Job, old_record: dict[str, Any], restart: int) -> Instance:
        options = next_launch(self.runtime, self.spec, job.provider, old_record, self.progress)
        last: RunctlError | None = None
        for attempt in range(1, LAUNCH_TRIES + 1):
            self._pending = None
            try:
                instance = launchers.launch(
                    self.runtime,
                    job.provider,
                    options,
                    self.progress,
                    on_created=lambda i: self._created(job, i, restart),
                )
                self._event(
                    "recover.ready",
                    job,
                    instance=f"{instance.provider}:{instance.instance_id}",
                    attempt=restart,
                )
                self._pending = None
                return instance
            except (ProviderError, NotFoundError, TransportError) as exc:  # incl. no capacity
                last = exc
                self._event("recover.launch_failed", job, error=exc.message, launch_try=attempt)
                self.progress(f"launch failed ({exc.message}); try {attempt}/{LAUNCH_TRIES}")
                self._cleanup_failed_launch(job)
                if attempt < LAUNCH_TRIES:
                    self.sleep(self.poll_s * 2**attempt)
        assert last is not None
        raise last

    def _created(self, job: Job, instance: Instance, restart: int) -> None:
        self._pending = instance
        self._event(
            "recover.launched",
            job,
            instance=f"{instance.provider}:{instance.instance_id}",
            attempt=restart,
            policy=self.spec.get("policy"),
        )
        if self.on_instance is not None:
            self.on_instance(instance)

    def _cleanup_failed_launch(self, job: Job) -> None:
        """A machine created but never ready must go before the next try (never two)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        with contextlib.suppress(RunctlError):
            launchers.terminate_verified(
                self.runtime,
                self.provider_for(job),
                pending.instance_id,
                timeout_s=float(self.runtime.config.get(f"{job.provider}.wait_timeout_s")),
                progress=self.progress,
            )
            self._event(
                "recover.terminated", job, instance=f"{pending.provider}:{pending.instance_id}"
            )

    def _arm_watchdog(self, job: Job, target: Target) -> None:
        if not arm_watchdog(self.runtime, target, self.spec.get("watchdog"), self.progress):
            return
        self._event(
            "recover.watchdog_armed",
            job,
            instance=f"{target.instance.provider}:{target.instance.instance_id}",
        )

    # ---------------------------------------------------------------------- helpers

    def _event(self, kind: str, job: Job, **data: Any) -> None:
        self.runtime.store.add_event(kind, self.root.job_id, {"job_id": job.job_id, **data})

    def _outcome(self, job: Job, result: str, restarts: int, reason: str | None = None) -> Outcome:
        chain = attempts(self.runtime, self.root)
        return Outcome(
            root_job=self.root.job_id,
            job=job,
            result=result,
            restarts=restarts,
            reason=reason,
            jobs=[j.job_id for j in chain],
            instances=list(dict.fromkeys(f"{j.provider}:{j.instance_id}" for j in chain)),
        )


def next_launch(
    runtime: Runtime,
    spec: dict[str, Any],
    provider_name: str,
    old_record: dict[str, Any],
    progress: Progress,
) -> dict[str, Any]:
    """The launch options for a replacement of the machine recorded as ``old_record``."""
    options = dict(spec.get("launch") or {})
    policy = spec.get("policy", "same")
    old = old_record.get("data") or {}
    if policy == "on-demand":
        options["spot"] = False
    elif policy == "other-region":
        regions = list(options.get("regions") or [])
        current = old.get("region") or options.get("region")
        index = regions.index(current) if current in regions else -1
        options["region"] = regions[(index + 1) % len(regions)]
        options.pop("availability_zone", None)
    elif policy == "other-az":
        from runctl.providers.aws.launch import availability_zones
        from runctl.providers.aws.provider import AWSProvider

        provider = launchers.make_provider(runtime, "aws", options, progress)
        assert isinstance(provider, AWSProvider)
        zones = availability_zones(provider)
        current = old.get("availability_zone")
        others = [z for z in zones if z != current]
        if others:
            index = zones.index(current) if current in zones else -1
            options["availability_zone"] = next(
                z for z in zones[index + 1 :] + zones if z != current
            )
        else:
            progress(f"note: no zone other than {current} is available; using it again")
    # Spot that cannot be had falls back to on-demand only if the user said yes at launch:
    # a controller has nobody to ask.
    return options


def arm_watchdog(
    runtime: Runtime, target: Target, policy: dict[str, Any] | None, progress: Progress
) -> bool:
    """Arm the host watchdog with ``policy`` (a ``WatchdogPolicy`` as a dict) and spot-notice
    watching where the machine has notices; False when there was nothing to watch."""
    from runctl.core import watchdog

    chosen = watchdog.WatchdogPolicy(**policy) if policy else None
    if chosen is not None and not chosen.has_policy:
        chosen = None  # nothing but spot watching, which guard arms where it exists
    return watchdog.guard(runtime, target, chosen, progress) is not None


def spent_usd(runtime: Runtime, instances: list[str]) -> float:
    """What the recorded machines ``provider:id`` cost so far (launch price x time billed)."""
    from datetime import UTC, datetime

    from runctl.core.costs import instance_cost

    now, total = datetime.now(UTC), 0.0
    for key in dict.fromkeys(instances):
        provider, _, instance_id = key.partition(":")
        record = runtime.store.get_instance_record(provider, instance_id)
        if record is not None:
            history = runtime.store.instance_history(int(record["resource_id"]))
            total += instance_cost(record, history, now).total_usd
    return total
