"""``runctl resources``: costs, inventory, insights, budgets, cleanup; ``runctl reconcile``.

Everything is priced from the state database (the price captured at launch x recorded state
intervals, ``core.costs``); ``list``/``summary``/``cleanup``/``stop-all`` first reconcile it
with what the providers list (``core.reconcile``) unless ``--no-refresh``. Only runctl-made
machines (AWS tag ``runctl:managed``, ``runctl-`` names elsewhere) are ever acted on.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runctl.cli.output import duration, emit, is_json, json_option, progress, runtime, table
from runctl.cli.params import seconds
from runctl.cli.summary import show_summary, summary_data
from runctl.errors import UsageError

if TYPE_CHECKING:
    from runctl.core.reconcile import Report
    from runctl.runtime import Runtime

CLOUDS = ("aws", "runpod", "lyceum")
DEFAULT_ROWS = 50  # `resources list` table without --limit; a last line says how many more
OWN = ("local", "ssh")  # machines you bring; `resources list --platform local` only
SORTS = {
    "cost": lambda r: -r["total_usd"],
    "hourly": lambda r: -(r["hourly_usd"] or 0.0),
    "age": lambda r: -(r["age_s"] or 0.0),
    "state": lambda r: r["state"],
    "name": lambda r: r["name"],
}


def platform_option(fn: Any) -> Any:
    return click.option(
        "--platform",
        "platforms",
        multiple=True,
        type=click.Choice([*CLOUDS, "all"]),
        help="Which providers (repeatable; default all; one without credentials is skipped).",
    )(fn)


def refresh_option(fn: Any) -> Any:
    return click.option(
        "--no-refresh", is_flag=True, help="Use recorded state only; do not ask the providers."
    )(fn)


def _platforms(values: tuple[str, ...]) -> list[str]:
    return list(CLOUDS) if not values or "all" in values else list(dict.fromkeys(values))


def _refresh(
    rt: Runtime,
    platforms: list[str],
    apply: bool = True,
    *,
    jobs: bool = False,
    leftovers: bool = False,
) -> Report:
    from runctl.core.reconcile import reconcile

    report = reconcile(rt, platforms, apply=apply, jobs=jobs, leftovers=leftovers)
    for name, why in report.skipped.items():
        progress(f"warning: {name} skipped: {why}")
    for name, whys in report.partial.items():
        progress(f"warning: {name} partly unreachable: {'; '.join(whys)}")
    return report


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


@click.group()
def resources() -> None:
    """Costs, inventory, insights, budgets and cleanup of runctl-made machines.

    \b
    Examples:
      runctl resources list
      runctl resources summary
      runctl resources cleanup --older-than 2d --dry-run
    """


# ---------------------------------------------------------------------------- list


def _select(
    rt: Runtime,
    platforms: list[str],
    project: str | None,
    user: str | None,
    state: str,
    sort: str,
    limit: int | None,
    own: list[str] | None = None,
) -> list[dict[str, Any]]:
    from runctl.core.cost_report import rows

    items = [r for r in rows(rt.store, datetime.now(UTC)) if r["provider"] in platforms]
    items += _own_machines(rt, own or [])
    if state != "all":
        items = [r for r in items if r["state"] == state]
    if project:
        on = {(j.provider, j.instance_id) for j in rt.store.list_jobs(project=project)}
        items = [
            r for r in items if r["project"] == project or (r["provider"], r["instance_id"]) in on
        ]
    if user:
        items = [r for r in items if r["user"] == user]
    items.sort(key=SORTS[sort])
    return items[:limit] if limit else items


def _own_machines(rt: Runtime, which: list[str]) -> list[dict[str, Any]]:
    """Rows for this machine and SSH hosts (the seed's ``--platform local``): the machines
    jobs ran on, busy while one of their jobs is live; they cost nothing runctl knows of."""
    if not which:
        return []  # the default listing: clouds only, no need to read every job
    import socket

    from runctl.core import costs

    now = datetime.now(UTC)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for job in sorted(rt.store.list_jobs(), key=lambda j: j.created_at):
        if job.provider not in which:
            continue
        row = found.setdefault((job.provider, job.instance_id), {
            "provider": job.provider, "instance_id": job.instance_id,
            "name": socket.gethostname() if job.provider == "local" else job.instance_id,
            "state": "idle", "spot": False, "hourly_usd": 0.0, "price_known": True,
            "hours": 0.0, "total_usd": 0.0, "today_usd": 0.0, "storage_usd": 0.0,
            "storage_known": True, "project": job.project, "user": "", "protected": False,
            "created_at": job.created_at, "age_s": costs.elapsed_s(job.created_at, None, now),
            "jobs": 0, "jobs_live": 0,
        })  # fmt: skip
        row["jobs"] += 1
        row["project"] = job.project
        if not job.state.is_final:
            row["jobs_live"] += 1
            row["state"] = "running"
    return list(found.values())


def _show_rows(items: list[dict[str, Any]], shown: int | None = None) -> None:
    """The table of ``items`` (its first ``shown`` rows) and a totals line over all of them."""
    if not items:
        click.echo("no instances match")
        return
    rows = items[:shown] if shown else items
    warn_h = float(runtime().config.get("costs.warn_hours"))
    warn_usd = float(runtime().config.get("costs.warn_usd"))
    table(
        ["instance", "name", "state", "spot", "$/h", "runtime", "total", "flags"],
        [
            (
                f"{r['provider']}:{r['instance_id']}",
                r["name"],
                r["state"],
                "spot" if r["spot"] else "",
                "unknown" if r["hourly_usd"] is None else f"{r['hourly_usd']:.3f}",
                duration(r["hours"] * 3600),
                f"${r['total_usd']:.2f}",
                " ".join(
                    f
                    for f, on in (
                        (f">{warn_h:g}h", r["hours"] > warn_h),
                        (f">${warn_usd:g}", r["total_usd"] > warn_usd),
                        ("protected", r["protected"]),
                    )
                    if on
                ),
            )
            for r in rows
        ],
    )
    if len(rows) < len(items):
        click.echo(f"… {len(items) - len(rows)} more; --limit {len(items)} shows all")
    total = sum(r["total_usd"] for r in items)
    burn = sum(r["hourly_usd"] or 0.0 for r in items if r["state"] in ("running", "pending"))
    click.echo(
        f"\n{len(items)} instance(s): ${burn:.2f}/h now, ${total:.2f} accumulated, "
        f"${burn * 24:.2f}/day, ${burn * 168:.2f}/week projected"
    )


@resources.command(name="list")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    type=click.Choice([*CLOUDS, *OWN, "all"]),
    help="Which providers (repeatable; default all clouds; one without credentials is "
    "skipped); local/ssh: this machine and SSH hosts that ran jobs.",
)
@click.option("--project", help="Tag runctl:project, or jobs of this project ran on it.")
@click.option("--user", help="Tag runctl:user (AWS; RunPod/Lyceum have no tags).")
@click.option(
    "--state",
    type=click.Choice(["running", "stopped", "terminated", "all"]),
    default="all",
    show_default=True,
    help="Only instances in this state.",
)
@click.option("--filter", "seed_filter", hidden=True,
              type=click.Choice(["running", "stopped", "terminated", "all"]),
              help="Old spelling of --state.")  # fmt: skip
@click.option("-d", "--detailed", "seed_detailed", is_flag=True, hidden=True,
              help="Old flag: the table always has every column.")  # fmt: skip
@click.option("--format", "seed_format", hidden=True, type=click.Choice(["compact", "table"]),
              help="Old flag: there is one table.")  # fmt: skip
@click.option("--show-terminated", "seed_terminated", is_flag=True, hidden=True,
              help="Old flag: --state all, the default.")  # fmt: skip
@click.option("--sort", type=click.Choice(sorted(SORTS)), default="cost", show_default=True)
@click.option("--limit", type=click.IntRange(min=1),
              help=f"Show at most N rows (table default: the {DEFAULT_ROWS} costliest first; "
              "--json/--export: all).")  # fmt: skip
@click.option("-w", "--watch", is_flag=True, help="Re-render every --interval seconds.")
@click.option("--interval", type=seconds(0.1), default=5.0, show_default=True)
@click.option(
    "--iterations",
    type=click.IntRange(min=0),
    default=0,
    help="With --watch: stop after N renders (0: until Ctrl-C).",
)
@click.option(
    "--export",
    "export",
    type=click.Choice(["csv", "html", "json"]),
    help="Write the rows as CSV, JSON, or a standalone HTML page with cost charts.",
)
@click.option(
    "--export-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where --export writes (default: stdout).",
)
@refresh_option
@json_option
def list_(
    platforms: tuple[str, ...],
    project: str | None,
    user: str | None,
    state: str,
    sort: str,
    limit: int | None,
    watch: bool,
    interval: float,
    iterations: int,
    export: str | None,
    export_file: Path | None,
    no_refresh: bool,
    seed_filter: str | None = None,
    seed_detailed: bool = False,
    seed_format: str | None = None,
    seed_terminated: bool = False,
) -> None:
    """List runctl-made instances with price, runtime and accumulated cost.

    \b
    Examples:
      runctl resources list
      runctl resources list --platform aws --state running
      runctl resources list --export csv --export-file inventory.csv
    """
    from runctl.cli.seed_compat import note

    if seed_filter is not None:
        note(f"--filter {seed_filter}", f"--state {seed_filter}")
        state = seed_filter
    for given, old in ((seed_detailed, "--detailed"), (seed_format, f"--format {seed_format}")):
        if given:
            note(old, "(no option: one table with every column)")
    if seed_terminated:
        note("--show-terminated", "--state all (the default)")
    rt = runtime()
    own = [p for p in OWN if p in platforms]
    chosen = (
        _platforms(tuple(p for p in platforms if p not in OWN))
        if not own or any(p in CLOUDS or p == "all" for p in platforms)
        else []
    )
    if export_file and not export:
        raise UsageError("--export-file needs --export", hint="add --export csv|html|json")
    if watch and (export or is_json()):
        raise UsageError("--watch renders a table", hint="drop --watch with --export/--json")
    renders = 0
    while True:
        if not no_refresh and chosen:
            _refresh(rt, chosen)
        items = _select(rt, chosen, project, user, state, sort, limit, own)
        if export:
            _export(rt, items, export, export_file)
            return
        shown = None if limit else DEFAULT_ROWS  # JSON and exports stay complete
        if not watch:
            emit(items, functools.partial(_show_rows, items, shown))
            return
        click.clear()
        click.echo(
            f"runctl resources — {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC "
            f"(every {interval:g}s, Ctrl-C to stop)\n"
        )
        _show_rows(items, shown)
        renders += 1
        if iterations and renders >= iterations:
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


def _export(rt: Runtime, items: list[dict[str, Any]], kind: str, dest: Path | None) -> None:
    import json

    from runctl.core import cost_report, costs

    now = datetime.now(UTC)
    if kind == "csv":
        text = cost_report.to_csv(items)
    elif kind == "json":
        text = json.dumps(items, indent=2, default=str) + "\n"
    else:
        summary = costs.summarize(rt.store, now=now).to_json()
        text = cost_report.to_html(items, cost_report.cumulative_series(rt.store, now), summary)
    if dest is None:
        click.echo(text, nl=False)
        return
    dest.write_text(text)
    progress(f"wrote {len(items)} row(s) as {kind} to {dest}")


# ---------------------------------------------------------------------------- summary


@resources.command()
@platform_option
@refresh_option
@json_option
def summary(platforms: tuple[str, ...], no_refresh: bool) -> None:
    """Hourly burn, today, total, daily/weekly projections, per provider, warnings.

    \b
    Examples:
      runctl resources summary
      runctl resources summary --platform runpod --json
    """
    rt = runtime()
    if not no_refresh:
        _refresh(rt, _platforms(platforms))
    data = summary_data(rt)
    emit(data, lambda: show_summary(data))


@resources.command()
@refresh_option
@json_option
def insights(no_refresh: bool) -> None:
    """Recommendations: long-running, expensive, stopped-but-billing, unpriced machines.

    \b
    Examples:
      runctl resources insights
    """
    rt = runtime()
    report = None if no_refresh else _refresh(rt, list(CLOUDS))
    data = summary_data(rt)
    tips: list[dict[str, str]] = []
    from runctl.core import costs

    for c in costs.summarize(rt.store).instances:
        where = f"{c.provider}:{c.instance_id}"
        hours = c.billed_s / 3600.0
        if c.state in costs.BILLED_STATES and hours > float(rt.config.get("costs.warn_hours")):
            tips.append(
                {
                    "instance": where,
                    "why": f"running {hours:.1f} h",
                    "do": f"runctl resources cleanup {where} --dry-run",
                }
            )
        if c.state == "stopped":
            tips.append(
                {
                    "instance": where,
                    "why": f"stopped: its disks still bill ({_money(c.storage_usd)} so far)",
                    "do": f"runctl resources cleanup {where}",
                }
            )
        if c.state in costs.BILLED_STATES and c.hourly_usd is None:
            tips.append(
                {
                    "instance": where,
                    "why": "price unknown (made outside this state)",
                    "do": "check it in the provider console",
                }
            )
    if report is not None:
        for f in report.of("orphan"):
            tips.append(
                {
                    "instance": f"{f.provider}:{f.instance_id}",
                    "why": "orphan: runctl made it but had not recorded it",
                    "do": f"runctl resources cleanup {f.provider}:{f.instance_id}",
                }
            )
    if data["hourly_burn_usd"] > 0 and not data["daily_budget_usd"]:
        tips.append(
            {
                "instance": "",
                "why": "no daily budget set",
                "do": "runctl config set costs.daily_budget_usd 50",
            }
        )
    out = {"summary": data, "recommendations": tips}

    def text() -> None:
        show_summary(data)
        click.echo("")
        if not tips:
            click.echo("no recommendations")
        for tip in tips:
            click.echo(
                f"- {tip['instance'] + ': ' if tip['instance'] else ''}{tip['why']}\n"
                f"    {tip['do']}"
            )

    emit(out, text)


# The commands that act live in resources_act (registered on this group when it is imported).
from runctl.cli import resources_act as _act  # noqa: E402,F401
