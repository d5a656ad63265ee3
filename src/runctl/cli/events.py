"""``runctl events``: what runctl recorded — job states, recoveries, watchdogs, workflows."""

from __future__ import annotations

import json
from typing import Any

import click

from runctl.cli.output import emit, json_option, runtime, table
from runctl.errors import NotFoundError


@click.command(name="events")
@click.argument("subject", required=False)
@click.option(
    "--kind",
    "kind",
    metavar="PREFIX",
    help="Only events whose kind starts with PREFIX: recover., watchdog., job.state",
)
@click.option("-n", "--last", "last", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show the newest N.")  # fmt: skip
@json_option
def events(subject: str | None, kind: str | None, last: int) -> None:
    """Show recorded events, oldest first: all, or of SUBJECT (a job, workflow or instance).

    \b
    A job of a recovery chain shows the chain's events (they are recorded on its first job):
    interrupted, terminated, launched, ready, watchdog_armed, resubmitted, finished.

    \b
    Examples:
      runctl events
      runctl events train-3f9a2c
      runctl events --kind recover. -n 50
    """
    rt = runtime()
    subjects = _subjects(rt, subject) if subject is not None else None
    found = rt.store.recent_events(subjects, kind, last)
    if subjects and not found and not (kind and rt.store.has_events(subjects)):
        raise NotFoundError(
            f"no events for {subject}", hint="see `runctl events` for every subject"
        )
    emit(found, lambda: _show(found))


def _subjects(rt: Any, subject: str) -> set[str]:
    """``subject`` itself and, for a job, every job of its recovery chain."""
    from runctl.core import recover
    from runctl.errors import RunctlError

    names = {subject}
    try:
        job = rt.store.get_job(subject)
    except RunctlError:
        return names  # a workflow, an instance ("aws:i-..."), an id of another kind
    root = recover.root_of(rt, job)
    names.update(j.job_id for j in recover.attempts(rt, root))
    return names


def _show(found: list[dict[str, Any]]) -> None:
    if not found:
        click.echo("no events")
        return
    rows = [(e["at"].replace("T", " ").rstrip("Z"), e["kind"], e["subject"], _data(e["data"]))
            for e in found]  # fmt: skip
    table(["at", "kind", "subject", "data"], rows)


def _data(data: Any) -> str:
    if isinstance(data, dict):
        return " ".join(f"{k}={v if not isinstance(v, dict | list) else json.dumps(v)}"
                        for k, v in data.items())  # fmt: skip
    return json.dumps(data)
