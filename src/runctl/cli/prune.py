"""`runctl jobs` as a group: listing (the plain command) plus `runctl jobs prune`.

`runctl jobs [OPTIONS]` keeps listing exactly as before; the group only adds sub-commands.
Listing also applies `jobs.retention_days` (at most once a day).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from runctl.cli.jobs import jobs as list_jobs
from runctl.cli.output import emit, is_json, json_option, progress, runtime
from runctl.errors import RunctlError


@click.group(
    invoke_without_command=True,
    params=list(list_jobs.params),
    help=list_jobs.help,
    short_help="List jobs; `jobs prune` deletes old finished ones.",
)
@click.pass_context
def jobs(ctx: click.Context, /, **opts: Any) -> None:
    if ctx.invoked_subcommand is not None:
        return
    rt = runtime()  # a bad config is the listing's error, reported once
    try:
        if float(rt.config.get("jobs.retention_days")) > 0:  # else skip importing it
            from runctl.core.prune import auto_prune

            auto_prune(rt, progress)
    except (RunctlError, OSError) as exc:  # retention is best effort; listing must work
        progress(f"warning: automatic job retention skipped: {exc}")
    assert list_jobs.callback is not None
    ctx.invoke(list_jobs.callback, **opts)


@jobs.command()
@click.option(
    "--older-than",
    "older_than",
    default="30d",
    show_default=True,
    metavar="AGE",
    help="Only jobs that ended longer ago than this (30d, 12h, 90m, 2w).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Always keep the newest N finished jobs.",
)
@click.option("--project", help="Only jobs of this project.")
@click.option("--on", "on", metavar="TARGET", help="Only jobs on this target (local, ssh:HOST).")
@click.option(
    "--checkpoints",
    is_flag=True,
    help="Also delete their checkpoint dirs (only those no kept job uses).",
)
@click.option("--dry-run", is_flag=True, help="List what would be pruned; delete nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def prune(older_than: str, keep: int, project: str | None, on: str | None, checkpoints: bool,
          dry_run: bool, yes: bool) -> None:  # fmt: skip
    """Delete finished jobs' directories on their hosts and forget them.

    Running jobs are never touched (the host re-checks each one); checkpoints stay unless
    --checkpoints.

    \b
    Examples:
      runctl jobs prune --older-than 30d --dry-run
      runctl jobs prune --keep 10 --project mnist -y
    """
    from runctl.core.prune import candidates, parse_age
    from runctl.core.prune import prune as do_prune
    from runctl.errors import UsageError

    rt = runtime()
    provider = instance_id = None
    if on:
        provider, _, instance_id = on.partition(":")
        instance_id = "local" if provider == "local" else instance_id
    old = candidates(rt, older_than_s=parse_age(older_than), keep=keep, project=project,
                     provider=provider, instance_id=instance_id or None)  # fmt: skip
    if dry_run or not old:
        emit({"dry_run": dry_run, "jobs": [j.job_id for j in old]},
             lambda: _list(old, "would prune" if dry_run else "nothing to prune"))  # fmt: skip
        return
    if not yes:
        if is_json() or not sys.stdin.isatty():
            raise UsageError(f"{len(old)} job(s) to prune", hint="confirm with --yes")
        _list(old, "will prune")
        if not click.confirm(f"delete {len(old)} job(s)?", default=False, err=True):
            raise click.exceptions.Abort()
    result = do_prune(rt, old, checkpoints=checkpoints, progress=progress)

    def text() -> None:
        click.echo(f"pruned {len(result.removed)} job(s)")
        for job_id in result.running:
            progress(f"kept {job_id}: still running on its host")
        for where, why in result.unreachable.items():
            progress(f"kept the jobs on {where}: unreachable ({why})")
        for directory in result.checkpoint_dirs:
            progress(f"deleted checkpoints {directory}")

    emit(result.to_json(), text)


def _list(jobs: list[Any], heading: str) -> None:
    if not jobs:
        click.echo(heading)
        return
    click.echo(f"{heading}:")
    for job in jobs:
        click.echo(f"  {job.job_id}  {job.state}  ended {job.ended_at or job.created_at}")
