"""Budgets: the global daily budget and per-job ``--budget``, checked against recorded costs.

``check`` computes where spending stands (from ``core.costs``: state intervals x launch price);
``enforce`` acts on what crossed a budget per ``costs.budget_action``: ``warn`` only reports,
``stop`` stops the instances (graceful: runctl jobs on them are cancelled first; a provider
without stop is reported, not terminated), ``terminate`` terminates them.

This module runs when ``runctl resources enforce`` runs (by hand, from cron, or a CI
schedule); ``runctl status`` shows the same warnings without acting. A per-job budget on a
priced cloud machine is also handed to the machine's own watchdog when the job starts
(``core.watchdog.job_policy``: budget / launch price = a max duration, acting per
costs.budget_action), so it holds with runctl closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runctl.core import costs
from runctl.errors import RunctlError, UsageError
from runctl.models import JobState

if TYPE_CHECKING:
    from runctl.runtime import Runtime

ACTIONS = ("warn", "stop", "terminate")
CLOUDS = frozenset({"aws", "runpod", "lyceum"})


@dataclass(frozen=True)
class BudgetCheck:
    scope: str  # "daily" or "job:<job id>"
    limit_usd: float
    spent_usd: float
    level: str  # ok | warn | over
    targets: list[tuple[str, str]] = field(default_factory=list)  # (provider, instance id)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "limit_usd": self.limit_usd,
            "spent_usd": round(self.spent_usd, 4),
            "level": self.level,
            "targets": [f"{p}:{i}" for p, i in self.targets],
        }


def _level(spent: float, limit: float, warn_fraction: float) -> str:
    if spent >= limit:
        return "over"
    return "warn" if spent >= limit * warn_fraction else "ok"


def check(runtime: Runtime, now: datetime | None = None) -> list[BudgetCheck]:
    """Every configured budget: the daily one (if set) and each active job's ``--budget``."""
    moment = now or datetime.now(UTC)
    cfg = runtime.config
    fraction = float(cfg.get("costs.budget_warn_fraction"))
    store = runtime.store
    out: list[BudgetCheck] = []
    daily = float(cfg.get("costs.daily_budget_usd") or 0.0)
    if daily > 0:
        summary = costs.summarize(store, daily_budget_usd=daily, now=moment)
        running = [
            (c.provider, c.instance_id)
            for c in summary.instances
            if c.state in costs.BILLED_STATES and c.provider in CLOUDS
        ]
        out.append(
            BudgetCheck(
                "daily",
                daily,
                summary.today_usd,
                _level(summary.today_usd, daily, fraction),
                running,
            )
        )
    # Only unfinished jobs can hold a live budget: ask the index for those, not all history.
    live = [s.value for s in JobState if not s.is_final and s != JobState.LOST]
    for job in store.list_jobs(states=live):
        limit = job.spec.get("budget_usd")
        if limit is None:
            continue
        record = store.get_instance_record(job.provider, job.instance_id)
        spent = 0.0
        if record is not None and record.get("hourly_usd") is not None:
            history = store.instance_history(int(record["resource_id"]))
            start = costs.parse_iso(job.started_at or job.created_at)
            seconds = costs.billed_seconds(history, moment, since=start)
            spent = float(record["hourly_usd"]) * seconds / 3600.0
        target = [(job.provider, job.instance_id)] if job.provider in CLOUDS else []
        out.append(
            BudgetCheck(
                f"job:{job.job_id}",
                float(limit),
                spent,
                _level(spent, float(limit), fraction),
                target,
            )
        )
    return out


def enforce(
    runtime: Runtime,
    checks: list[BudgetCheck],
    action: str,
    *,
    dry_run: bool,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Act on every budget that is ``over``; returns what was (or, dry run, would be) done."""
    if action not in ACTIONS:
        raise UsageError(f"unknown budget action {action!r}", hint="use warn, stop or terminate")
    done: list[dict[str, Any]] = []
    handled: set[tuple[str, str]] = set()
    for item in checks:
        if item.level == "ok":
            continue
        progress(
            f"budget {item.scope}: ${item.spent_usd:.2f} of ${item.limit_usd:.2f} ({item.level})"
        )
        if item.level != "over" or action == "warn":
            continue
        for provider_name, instance_id in item.targets:
            if (provider_name, instance_id) in handled:
                continue
            handled.add((provider_name, instance_id))
            entry: dict[str, Any] = {
                "scope": item.scope,
                "instance": f"{provider_name}:{instance_id}",
                "action": action,
            }
            if dry_run:
                entry["result"] = "dry-run"
            else:
                entry["result"] = shut_down(runtime, provider_name, instance_id, action, progress)
            done.append(entry)
    return done


def shut_down(
    runtime: Runtime,
    provider_name: str,
    instance_id: str,
    action: str,
    progress: Callable[[str], None],
) -> str:
    """Cancel runctl jobs on the instance (SIGTERM, grace, SIGKILL), then stop or terminate it.

    Returns "stopped", "terminated", or "skipped: <why>"; provider errors become the reason.
    """
    from runctl.core.cloud import observe, record_gone
    from runctl.core.jobs import cancel
    from runctl.providers import get_provider
    from runctl.providers.base import SupportsStop

    provider = get_provider(provider_name, runtime)
    if action == "stop" and not isinstance(provider, SupportsStop):
        why = provider.unsupported.get("stop", "the provider cannot stop machines")
        return f"skipped: {why}"
    jobs = runtime.store.list_jobs(provider=provider_name, instance_id=instance_id)
    for job in jobs:
        if job.state.is_final or job.state == JobState.LOST:
            continue
        try:
            cancel(runtime, job)
            progress(f"cancelled {job.job_id} on {provider_name}:{instance_id}")
        except RunctlError as exc:
            progress(f"warning: could not cancel {job.job_id} gracefully: {exc.message}")
    try:
        if action == "stop":
            assert isinstance(provider, SupportsStop)
            provider.stop_instance(instance_id)
            instance = provider.get_instance(instance_id)
            if instance is not None:
                observe(runtime, instance)
            return "stopped"
        provider.terminate_instance(instance_id)  # type: ignore[attr-defined]
        record_gone(runtime, provider_name, instance_id)
        return "terminated"
    except RunctlError as exc:
        return f"skipped: {exc.message}"
