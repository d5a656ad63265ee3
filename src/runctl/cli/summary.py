"""The cost summary of `runctl status` and `runctl resources summary`: burn, today, total,
projections, per provider, threshold and budget warnings.

Its own module so `status` does not import the whole `resources` command group.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from runctl.runtime import Runtime


def summary_data(rt: Runtime) -> dict[str, Any]:
    """Costs now: burn, today, total, projections, per provider, and threshold warnings."""
    from runctl.core import budget, costs

    now = datetime.now(UTC)
    cfg = rt.config
    summary = costs.summarize(
        rt.store, daily_budget_usd=float(cfg.get("costs.daily_budget_usd")), now=now
    )
    warn_h, warn_usd = float(cfg.get("costs.warn_hours")), float(cfg.get("costs.warn_usd"))
    running = [c for c in summary.instances if c.state in costs.BILLED_STATES]
    per: dict[str, dict[str, float]] = {}
    for c in summary.instances:
        entry = per.setdefault(c.provider, {"running": 0, "hourly_usd": 0.0, "total_usd": 0.0})
        entry["total_usd"] = round(entry["total_usd"] + c.total_usd, 4)
        if c.state in costs.BILLED_STATES:
            entry["running"] += 1
            entry["hourly_usd"] = round(entry["hourly_usd"] + (c.hourly_usd or 0.0), 4)
    warnings = []
    for c in running:
        where = f"{c.provider}:{c.instance_id}"
        if c.billed_s / 3600.0 > warn_h:
            warnings.append(f"{where} has run {c.billed_s / 3600.0:.1f} h (> {warn_h:g} h)")
        if c.total_usd > warn_usd:
            warnings.append(f"{where} has cost ${c.total_usd:.2f} (> ${warn_usd:g})")
        if c.hourly_usd is None:
            warnings.append(f"{where}: price unknown (adopted by reconcile); not in the totals")
    for c in summary.instances:
        if not c.storage_known:
            warnings.append(
                f"{c.provider}:{c.instance_id}: stopped, disk size unknown; "
                "storage cost not counted (run `runctl reconcile`)"
            )
    checks = budget.check(rt, now)
    for item in checks:
        if item.level != "ok":
            warnings.append(
                f"budget {item.scope}: ${item.spent_usd:.2f} of "
                f"${item.limit_usd:.2f} ({item.level})"
            )
    return {
        **summary.to_json(),
        "running": len(running),
        "daily_projection_usd": round(summary.hourly_burn_usd * 24, 4),
        "weekly_projection_usd": round(summary.hourly_burn_usd * 168, 4),
        "providers": per,
        "budgets": [c.to_json() for c in checks],
        "warnings": warnings,
    }


def show_summary(data: dict[str, Any], *, collapse: bool = False) -> None:
    """The summary as text; ``collapse`` (the `status` overview) prints at most
    ``SAME_WARNINGS`` warnings of each kind and one line counting the rest."""
    click.echo(
        f"{data['running']} instance(s) running: ${data['hourly_burn_usd']:.2f}/h, "
        f"today ${data['today_usd']:.2f}, total ${data['total_usd']:.2f}"
    )
    click.echo(
        f"projected: ${data['daily_projection_usd']:.2f}/day, "
        f"${data['weekly_projection_usd']:.2f}/week"
    )
    if data["daily_budget_usd"]:
        click.echo(f"daily budget: ${data['daily_budget_usd']:.2f}")
    for name, entry in sorted(data["providers"].items()):
        click.echo(
            f"  {name}: {entry['running']} running, ${entry['hourly_usd']:.2f}/h, "
            f"${entry['total_usd']:.2f} total"
        )
    for line in collapse_warnings(data["warnings"]) if collapse else data["warnings"]:
        click.echo(f"warning: {line}")


SAME_WARNINGS = 3


def collapse_warnings(lines: list[str]) -> list[str]:
    """Warnings alike but for the machine, job or numbers they name, in groups of at most
    ``SAME_WARNINGS``, each followed by one "N more like this" line."""
    import re

    groups: dict[str, list[str]] = {}
    for line in lines:
        key = re.sub(r"^[\w.-]+:[\w.-]+:? ", "", line)  # leading provider:instance
        key = re.sub(r"job:\S+", "job:", key)
        groups.setdefault(re.sub(r"[\d.,]+", "#", key), []).append(line)
    out = []
    for same in groups.values():
        out += same[:SAME_WARNINGS]
        if len(same) > SAME_WARNINGS:
            out.append(
                f"… {len(same) - SAME_WARNINGS} more like this (`runctl resources summary` "
                "lists them all)"
            )
    return out
