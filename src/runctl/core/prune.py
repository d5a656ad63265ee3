"""`runctl jobs prune` and automatic retention: delete finished jobs' dirs, forget them.

Only jobs that are over (succeeded, failed, cancelled, preempted, lost) are candidates, and
the host's agent re-checks each one before deleting its directory, so a job that is in fact
still running is never touched. Checkpoints live outside job dirs and are deleted only when
asked, and only when no job that stays shares the checkpoint directory.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runctl.core import agent
from runctl.errors import NotFoundError, RunctlError, UsageError
from runctl.models import Job, JobState
from runctl.runtime import Runtime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
AUTO_PRUNE_EVERY_S = 86400.0
STAMP = "last-auto-prune"


@dataclass
class PruneResult:
    removed: list[str] = field(default_factory=list)  # dirs deleted (or already gone); forgotten
    running: list[str] = field(default_factory=list)  # the host says it still runs: kept
    unreachable: dict[str, str] = field(default_factory=dict)  # target -> why; jobs kept
    checkpoint_dirs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (a bare number: days) -> seconds."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in _UNITS else "d"
    number = raw[:-1] if raw[-1:] in _UNITS else raw
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value > 100 * 365:
        raise UsageError(f"invalid age {text[:40]!r}", hint="use e.g. 30d, 12h, 90m or 2w")
    return value * _UNITS[unit]


def _finished(job: Job) -> bool:
    return job.state.is_final or job.state == JobState.LOST


def _ended(job: Job) -> float:
    stamp = job.ended_at or job.created_at
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def candidates(
    runtime: Runtime, *, older_than_s: float, keep: int = 0, project: str | None = None,
    provider: str | None = None, instance_id: str | None = None,
) -> list[Job]:  # fmt: skip
    """Finished jobs that ended more than ``older_than_s`` ago, minus the newest ``keep``."""
    found = runtime.store.list_jobs(project=project, provider=provider, instance_id=instance_id)
    done = sorted((j for j in found if _finished(j)), key=_ended, reverse=True)
    cutoff = time.time() - older_than_s
    return [j for j in done[keep:] if _ended(j) <= cutoff]


def prune(
    runtime: Runtime, jobs: Sequence[Job], *, checkpoints: bool = False,
    progress: Callable[[str], None] = lambda _m: None,
) -> PruneResult:  # fmt: skip
    """Delete the dirs of ``jobs`` on their hosts and forget them; see the module doc."""
    from runctl.core.targets import instance_of_job

    result = PruneResult()
    by_target: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        by_target.setdefault((job.provider, job.instance_id), []).append(job)
    for (provider, instance_id), group in by_target.items():
        where = "local" if provider == "local" else f"{provider}:{instance_id}"
        try:
            target = instance_of_job(runtime, provider, instance_id)
        except NotFoundError:
            # The host was removed or the machine is gone: so are its job dirs.
            result.removed += [j.job_id for j in group]
            continue
        except RunctlError as exc:
            result.unreachable[where] = exc.message
            continue
        try:
            transport = target.provider.connect(target.instance)
            answer = agent.call_json(target.instance, transport,
                                     ["remove", "--base", target.instance.remote_dir,
                                      *(j.job_id for j in group)], timeout=120)  # fmt: skip
        except RunctlError as exc:
            result.unreachable[where] = exc.message
            progress(f"warning: {where} unreachable ({exc.message}); its jobs are kept")
            continue
        for job in group:
            outcome = answer.get(job.job_id, "missing")
            if outcome in ("removed", "missing"):
                result.removed.append(job.job_id)
            elif outcome == "running":
                result.running.append(job.job_id)
        if checkpoints:
            result.checkpoint_dirs += _drop_checkpoints(runtime, transport, group, result)
    runtime.store.delete_jobs(result.removed)
    if result.removed:
        runtime.store.add_event("jobs.pruned", "jobs", {"count": len(result.removed)})
    return result


def _drop_checkpoints(
    runtime: Runtime, transport: Any, group: list[Job], result: PruneResult
) -> list[str]:
    gone = set(result.removed)
    # A checkpoint dir is per project/name: a job that stays may resume from it.
    kept = {j.checkpoint_dir for j in runtime.store.list_jobs() if j.job_id not in gone}
    dirs = {j.checkpoint_dir for j in group if j.job_id in gone and j.checkpoint_dir}
    dropped = []
    for directory in sorted(dirs - kept):
        if directory.count("/") < 2:  # never "/" or a bare top-level name
            continue
        done = transport.run(["sh", "-c", f"rm -rf -- {shlex.quote(directory)}"], timeout=120)
        if done.returncode == 0:
            dropped.append(directory)
    return dropped


def auto_prune(runtime: Runtime, progress: Callable[[str], None]) -> PruneResult | None:
    """Apply ``jobs.retention_days`` at most once a day (from `runctl jobs`)."""
    days = float(runtime.config.get("jobs.retention_days"))
    if days <= 0:
        return None
    stamp = runtime.home / STAMP
    try:
        if time.time() - stamp.stat().st_mtime < AUTO_PRUNE_EVERY_S:
            return None
    except FileNotFoundError:
        pass
    stamp.touch()  # first, so concurrent `jobs` calls do not all prune
    old = candidates(runtime, older_than_s=days * 86400)
    if not old:
        return None
    result = prune(runtime, old, progress=progress)
    if result.removed:
        progress(f"pruned {len(result.removed)} job(s) older than {days:g} days "
                 "(jobs.retention_days)")  # fmt: skip
    return result
