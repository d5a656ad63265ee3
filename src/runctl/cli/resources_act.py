"""``runctl resources cleanup|stop-all|enforce`` and ``runctl reconcile``: the commands that act.

Each plans first (what would be stopped, terminated or deleted, and what it has cost), shows the
plan, asks a real y/N unless ``--yes`` (``--dry-run`` acts on nothing), then acts and reports.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from runctl.cli.output import (
    duration,
    emit,
    get_ctx,
    is_json,
    json_option,
    progress,
    runtime,
    table,
)
from runctl.cli.params import seconds
from runctl.cli.seed_compat import force_means_yes
from runctl.errors import UsageError

if TYPE_CHECKING:
    from runctl.cli.leftovers import LeftoverPlan
    from runctl.core.reconcile import Report
    from runctl.runtime import Runtime

from runctl.cli.resources import (
    CLOUDS,
    _money,
    _platforms,
    _refresh,
    platform_option,
    resources,
)  # fmt: skip

# ---------------------------------------------------------------------------- acting


def _candidates(
    rt: Runtime,
    report: Report,
    named: tuple[str, ...],
    states: set[str],
    older_than_s: float | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(targets, refused) among the live runctl-made instances of ``report``."""
    from runctl.core import costs

    now = datetime.now(UTC)
    wanted = set(named)
    live = {f"{i.provider}:{i.instance_id}": i for _, i in report.live}
    unknown = wanted - set(live)
    if unknown:
        from runctl.errors import NotFoundError

        raise NotFoundError(
            f"not a live runctl-made instance: {', '.join(sorted(unknown))}",
            hint="name them as PROVIDER:ID; see `runctl resources list`",
        )
    targets, refused = [], []
    for key, instance in live.items():
        if wanted and key not in wanted:
            continue
        if str(instance.state) not in states:
            continue
        record = rt.store.get_instance_record(instance.provider, instance.instance_id)
        cost = None
        if record is not None:
            hist = rt.store.instance_history(int(record["resource_id"]))
            cost = costs.instance_cost(record, hist, now)
        age = costs.elapsed_s((record or {}).get("created_at"), None, now)
        row = {
            "instance": key,
            "name": instance.name,
            "state": str(instance.state),
            "hourly_usd": None if cost is None else cost.hourly_usd,
            "cost_so_far_usd": None if cost is None else round(cost.total_usd, 4),
        }
        if instance.tags.get("runctl:protected", "").lower() == "true":
            refused.append({**row, "why": "tagged runctl:protected=true"})
        elif older_than_s and not wanted and age is not None and age < older_than_s:
            refused.append({**row, "why": f"younger than {duration(older_than_s)}"})
        else:
            targets.append(row)
    return targets, refused


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if is_json():
        raise UsageError("refusing to act without confirmation under --json", hint="pass --yes")
    if not click.confirm(question, default=False):
        raise click.Abort()


def _act(rt: Runtime, targets: list[dict[str, Any]], action: str) -> None:
    from runctl.core.budget import shut_down

    for row in targets:
        provider, instance_id = row["instance"].split(":", 1)
        row["result"] = shut_down(rt, provider, instance_id, action, progress)
        progress(f"{row['instance']}: {row['result']}")


def _plan_text(
    targets: list[dict[str, Any]], refused: list[dict[str, Any]], verb: str, empty: str = ""
) -> None:
    if not targets and empty:
        click.echo(empty)
    for row in targets:
        click.echo(
            f"{verb} {row['instance']} ({row['name']}, {row['state']}, "
            f"{_money(row['hourly_usd'])}/h, {_money(row['cost_so_far_usd'])} so far)"
        )
    for row in refused:
        click.echo(f"skip {row['instance']}: {row['why']}")


@resources.command()
@click.argument("named", nargs=-1, metavar="[PROVIDER:ID]...")
@platform_option
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Only machines created longer ago (e.g. 24h); ignored for named ones.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be terminated; change nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@force_means_yes
@json_option
def cleanup(
    named: tuple[str, ...],
    platforms: tuple[str, ...],
    older_than: str | None,
    dry_run: bool,
    yes: bool,
    seed_force: bool = False,
) -> None:
    """Terminate runctl-made machines (all, or the NAMED ones); never runctl:protected ones.

    Runctl jobs on them are cancelled first (SIGTERM, grace, SIGKILL). Without NAMED, AWS
    leftovers go too: detached volumes of gone instances are deleted, spot requests without a
    live instance cancelled (protected ones kept; key pairs are free and kept).

    \b
    Examples:
      runctl resources cleanup --older-than 2d --dry-run
      runctl resources cleanup aws:i-0abc123 -y
    """
    from runctl.cli.cloud import parse_duration_s
    from runctl.cli.leftovers import plan_leftovers

    rt = runtime()
    chosen = _platforms(platforms)
    if named:
        chosen = list(dict.fromkeys(n.split(":", 1)[0] for n in named))
        bad = [n for n in chosen if n not in CLOUDS]
        if bad:
            raise UsageError(
                f"unknown provider in {', '.join(named)}",
                hint=f"name instances as PROVIDER:ID with PROVIDER in {', '.join(CLOUDS)}",
            )
    limit = parse_duration_s(older_than) if older_than else None
    report = _refresh(rt, chosen, apply=not dry_run, jobs=True, leftovers=not named)
    states = {"running", "pending", "stopped", "stopping", "unknown"}
    targets, refused = _candidates(rt, report, named, states, limit)
    extra = plan_leftovers(report, limit)
    total = sum(t["cost_so_far_usd"] or 0.0 for t in targets)
    parts = [f"terminate {len(targets)} instance(s) (${total:.2f} spent so far)", extra.counts()]
    question = ", ".join(p for i, p in enumerate(parts) if p and (i or targets)) + "?"
    question = question[:1].upper() + question[1:]
    _plan_confirm_act(rt, report, targets, refused, dry_run=dry_run, yes=yes or seed_force,
                      action="terminate",
                      question=question, nothing="nothing to clean up",
                      leftovers=extra)  # fmt: skip


def _plan_confirm_act(
    rt: Any, report: Any, targets: list[dict[str, Any]], refused: list[dict[str, Any]], *,
    dry_run: bool, yes: bool, action: str, question: str, nothing: str,
    leftovers: LeftoverPlan | None = None,
) -> None:  # fmt: skip
    """Show the plan; unless dry-run, ask (or --yes), act on every target, report results."""
    data: dict[str, Any] = {
        "dry_run": dry_run,
        "targets": targets,
        "refused": refused,
        "skipped_providers": report.skipped,
    }
    if leftovers is not None:
        data["leftovers"] = leftovers.to_json()
    pending = bool(targets or (leftovers and leftovers.targets))

    def plan(would: bool) -> None:
        _plan_text(targets, refused, f"would {action}" if would else action,
                   "" if pending else nothing)  # fmt: skip
        if leftovers is not None:
            leftovers.show(would)

    if not pending or dry_run:
        emit(data, lambda: plan(True))
        return
    if not is_json():
        plan(False)
    _confirm(question, yes)
    _act(rt, targets, action)
    done = "terminated" if action == "terminate" else "stopped"
    summary = [f"{done} {sum(t['result'] == done for t in targets)} instance(s)"]
    if leftovers is not None and leftovers.targets:
        summary.append(leftovers.act(rt))
    emit(data, ", ".join(s for s in summary if s))


@resources.command(name="stop-all")
@platform_option
@click.option("--dry-run", is_flag=True, help="Show what would be stopped; change nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@force_means_yes
@json_option
def stop_all(
    platforms: tuple[str, ...], dry_run: bool, yes: bool, seed_force: bool = False
) -> None:
    """Stop every running runctl-made machine, cancelling its runctl jobs gracefully first.

    Machines that cannot be stopped (Lyceum) are listed and left running.

    \b
    Examples:
      runctl resources stop-all --dry-run
      runctl resources stop-all --platform aws -y
    """
    rt = runtime()
    report = _refresh(rt, _platforms(platforms), apply=not dry_run)
    targets, refused = _candidates(rt, report, (), {"running", "pending"}, None)
    burn = sum(t["hourly_usd"] or 0.0 for t in targets)
    _plan_confirm_act(rt, report, targets, refused, dry_run=dry_run, yes=yes or seed_force,
                      action="stop",
                      question=f"Stop {len(targets)} instance(s) (saves ${burn:.2f}/h)?",
                      nothing="nothing running")  # fmt: skip


@resources.command()
@click.option(
    "--action",
    type=click.Choice(["warn", "stop", "terminate"]),
    help="Override costs.budget_action for this run.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option(
    "--every",
    "every_s",
    type=seconds(0.1),
    metavar="SECONDS",
    help="Keep checking, every SECONDS, until Ctrl-C (--json: one line a round).",
)
@json_option
def enforce(action: str | None, dry_run: bool, every_s: float | None) -> None:
    """Check the daily budget and per-job --budget; act on crossed ones per costs.budget_action.

    \b
    A job's --budget on a priced cloud machine is also enforced by that machine's watchdog,
    with runctl closed. The daily budget spans machines, so only this command enforces it:
    run it from cron (`*/5 * * * * runctl resources enforce`) or keep it running with
    --every 300.

    \b
    Examples:
      runctl resources enforce --dry-run
      runctl resources enforce --every 300
    """
    if every_s is None:
        _enforce_once(action, dry_run, compact=False)
        return
    while True:
        _enforce_once(action, dry_run, compact=True)
        time.sleep(every_s)
        get_ctx().reload()  # config edits (a new budget) count from the next round


def _enforce_once(action: str | None, dry_run: bool, *, compact: bool) -> None:
    from runctl.core import budget

    rt = runtime()
    chosen = action or str(rt.config.get("costs.budget_action"))
    checks = budget.check(rt)
    actions = budget.enforce(rt, checks, chosen, dry_run=dry_run, progress=progress)
    data = {
        "action": chosen,
        "dry_run": dry_run,
        "budgets": [c.to_json() for c in checks],
        "actions": actions,
    }
    if compact and is_json():  # a stream of rounds: one JSON document per line
        click.echo(json.dumps(data, default=str), nl=True)
        return

    def text() -> None:
        if not checks:
            click.echo("no budgets set (costs.daily_budget_usd, run --budget)")
        for c in checks:
            click.echo(f"{c.scope}: ${c.spent_usd:.2f} of ${c.limit_usd:.2f} ({c.level})")
        for a in actions:
            click.echo(f"{a['action']} {a['instance']}: {a['result']}")

    emit(data, text)


# ---------------------------------------------------------------------------- reconcile


@click.command()
@platform_option
@click.option("--dry-run", is_flag=True, help="Report only; do not update the state database.")
@json_option
def reconcile(platforms: tuple[str, ...], dry_run: bool) -> None:
    """Compare provider listings with state: orphans, vanished, drifted (and fix state).

    Also checks active job records against the agents on their machines (jobs whose machine
    is gone, or whose agent never started them, are marked lost; jobs a killed CLI left in
    "submitting" that do run are recorded as running) and lists AWS leftovers: detached
    volumes of gone instances, open spot requests, imported key pairs.

    \b
    Examples:
      runctl reconcile --dry-run
      runctl reconcile --platform aws
    """
    from runctl.cli.leftovers import show_jobs, show_leftovers

    rt = runtime()
    report = _refresh(rt, _platforms(platforms), apply=not dry_run, jobs=True, leftovers=True)
    data = {**report.to_json(), "dry_run": dry_run}

    def text() -> None:
        rows = [
            (f.kind, f"{f.provider}:{f.instance_id}", f.name, f.recorded_state or "", f.state)
            for f in report.findings
        ]
        if rows:
            table(["kind", "instance", "name", "recorded", "provider says"], rows)
        counts = {k: len(report.of(k)) for k in ("orphan", "vanished", "drifted", "known")}
        click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))
        if report.of("orphan"):
            click.echo("terminate orphans with `runctl resources cleanup PROVIDER:ID`")
        show_jobs(report)
        show_leftovers(report)

    emit(data, text)
