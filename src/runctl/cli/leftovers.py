"""What ``reconcile`` and ``resources cleanup`` show and do besides instances.

``reconcile`` shows the job findings (``core.reconcile_jobs``) and the AWS leftovers
(``core.reconcile_aws``). ``resources cleanup`` deletes leftover volumes and cancels leftover
spot requests after the same confirmation as the instances; protected ones and key pairs (free)
are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from runctl.cli.output import duration, progress, table

if TYPE_CHECKING:
    from runctl.core.reconcile import Report
    from runctl.core.reconcile_aws import Leftover
    from runctl.runtime import Runtime

VERBS = {"delete": ("delete", "deleted"), "cancel": ("cancel", "cancelled")}
NOUNS = {"volume": "volume", "spot-request": "spot request", "key-pair": "key pair"}


def show_jobs(report: Report) -> None:
    """The job findings of a reconcile, as a table (nothing when there are none)."""
    if not report.jobs:
        return
    click.echo("")
    table(
        ["job", "on", "was", "now", "finding", "why"],
        [(j.job_id, f"{j.provider}:{j.instance_id}", j.recorded_state, j.state, j.kind,
          j.reason) for j in report.jobs],
    )  # fmt: skip


def show_leftovers(report: Report) -> None:
    """The AWS leftovers of a reconcile, and what cleanup would do with them."""
    if not report.leftovers:
        return
    click.echo("")
    table(
        ["leftover", "kind", "region", "name", "state", "cleanup"],
        [(item.key, NOUNS[item.kind], item.region, item.name, item.state + _size(item),
          "keep (protected)" if item.protected else item.action)
         for item in report.leftovers],
    )  # fmt: skip
    if any(item.action != "keep" for item in report.leftovers):
        click.echo("delete/cancel them with `runctl resources cleanup --platform aws`")


def _size(item: Leftover) -> str:
    return f", {item.size_gb} GB" if item.size_gb else ""


@dataclass
class LeftoverPlan:
    """The leftovers cleanup acts on (rows for output) and the ones it refuses."""

    targets: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, Leftover] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"targets": self.targets, "refused": self.refused}

    def counts(self) -> str:
        """What cleanup would do, e.g. "delete 2 volume(s) (80 GB)"; empty: nothing."""
        parts = []
        volumes = [r for r in self.targets if r["kind"] == "volume"]
        if volumes:
            size_gb = sum(r["size_gb"] or 0 for r in volumes)
            parts.append(f"delete {len(volumes)} volume(s) ({size_gb} GB)")
        requests = [r for r in self.targets if r["kind"] == "spot-request"]
        if requests:
            parts.append(f"cancel {len(requests)} spot request(s)")
        return ", ".join(parts)

    def show(self, dry_run: bool) -> None:
        for row in self.targets:
            verb = VERBS[row["action"]][0]
            click.echo(f"{'would ' if dry_run else ''}{verb} {row['resource']} "
                       f"({NOUNS[row['kind']]}, {row['state']}, {row['region']})")  # fmt: skip
        for row in self.refused:
            click.echo(f"skip {row['resource']}: {row['why']}")

    def act(self, rt: Runtime) -> str:
        """Delete/cancel every target; returns a summary such as "deleted 2 volume(s)"."""
        from runctl.core.reconcile_aws import remove

        for row in self.targets:
            row["result"] = remove(rt, self.items[row["resource"]])
            progress(f"{row['resource']}: {row['result']}")
        done = []
        for kind, action in (("volume", "delete"), ("spot-request", "cancel")):
            past = VERBS[action][1]
            count = sum(r["result"] == past for r in self.targets if r["kind"] == kind)
            if count:
                done.append(f"{past} {count} {NOUNS[kind]}(s)")
        return ", ".join(done)


def plan_leftovers(report: Report, older_than_s: float | None) -> LeftoverPlan:
    """Which leftovers cleanup would delete/cancel; protected and too-young ones refused."""
    from runctl.core import costs

    plan = LeftoverPlan()
    now = datetime.now(UTC)
    for item in report.leftovers:
        if item.kind == "key-pair":
            continue  # free: never cleaned up
        row: dict[str, Any] = {
            "resource": item.key, "kind": item.kind, "region": item.region, "name": item.name,
            "state": item.state, "size_gb": item.size_gb, "action": item.action,
        }  # fmt: skip
        age_s = costs.elapsed_s(item.created_at, None, now)
        if item.protected:
            plan.refused.append({**row, "why": "tagged runctl:protected or runctl:persistent"})
        elif older_than_s and age_s is not None and age_s < older_than_s:
            plan.refused.append({**row, "why": f"younger than {duration(older_than_s)}"})
        else:
            plan.targets.append(row)
            plan.items[item.key] = item
    return plan
