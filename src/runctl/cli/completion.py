"""Shell completion: `runctl completion bash|zsh|fish` and the values it completes.

The script is click's own (click.shell_completion); the shell calls `runctl` back with
``_RUNCTL_COMPLETE`` set. Job ids, host names, machine ids and checkpoint locations come from
the local state database only, opened read-only: completing never contacts a host or a cloud
and never creates RUNCTL_HOME.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence

import click
from click.shell_completion import CompletionItem

COMPLETE_VAR = "_RUNCTL_COMPLETE"
_CLOUDS = ("aws", "runpod", "lyceum")

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def is_completing() -> bool:
    return bool(os.environ.get(COMPLETE_VAR))


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL; load it from your shell's startup file.

    Completes commands, options, job ids, host names, machine ids and checkpoint
    locations (from local state: nothing is contacted while you press TAB).

    \b
    Examples:
      runctl completion bash > ~/.local/share/bash-completion/completions/runctl
      runctl completion zsh > ~/.zfunc/_runctl
      runctl completion fish > ~/.config/fish/completions/runctl.fish
    """
    from click.shell_completion import get_completion_class

    from runctl.cli import cli

    cls = get_completion_class(shell)
    assert cls is not None  # the Choice above lists only shells click knows
    click.echo(cls(cli, {}, "runctl", COMPLETE_VAR).source())


# ------------------------------------------------------------------ values from local state


def _rows(sql: str, args: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Rows from state.db opened read-only; nothing (never an error) when it is unreadable."""
    from runctl.config import home

    path = home() / "state.db"
    if not path.is_file():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
        try:
            return [tuple(str(v) for v in row) for row in db.execute(sql, args)]
        finally:
            db.close()
    except sqlite3.Error:
        return []


def _items(rows: Sequence[tuple[str, ...]], incomplete: str) -> list[CompletionItem]:
    return [
        CompletionItem(row[0], help=row[1] if len(row) > 1 else None)
        for row in rows
        if row[0].startswith(incomplete)
    ]


def _jobs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    rows = _rows("SELECT job_id, state || ' ' || name FROM jobs ORDER BY created_at DESC")
    return _items(rows, incomplete)


def _hosts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _items(_rows("SELECT name, host FROM hosts ORDER BY name"), incomplete)


def _provider_of(ctx: click.Context) -> str | None:
    node: click.Context | None = ctx
    while node is not None:
        if node.info_name in _CLOUDS:
            return node.info_name
        node = node.parent
    return None


def _instances(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    provider = _provider_of(ctx)
    sql = "SELECT instance_id, state || ' ' || name FROM instances"
    if provider is None:
        return _items(_rows(sql + " ORDER BY resource_id DESC"), incomplete)
    rows = _rows(sql + " WHERE provider = ? ORDER BY resource_id DESC", (provider,))
    return _items(rows, incomplete)


def _targets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    rows = [("local", "this machine")]
    rows += [(f"ssh:{name}", host) for name, host in _rows("SELECT name, host FROM hosts")]
    rows += [
        (f"{provider}:{iid}", f"{state} {name}")
        for provider, iid, state, name in _rows(
            "SELECT provider, instance_id, state, name FROM instances "
            "WHERE state NOT IN ('terminated', 'deleted') ORDER BY resource_id DESC"
        )
    ]
    return _items(rows, incomplete)


def _locations(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """A checkpoint location: job:JOB_ID of a known job, else a local path."""
    if incomplete.startswith("job:") or (incomplete and "job:".startswith(incomplete)):
        rows = _rows("SELECT 'job:' || job_id, state || ' ' || name FROM jobs "
                     "ORDER BY created_at DESC")  # fmt: skip
        return _items(rows, incomplete)
    return [CompletionItem(incomplete, type="file")]


# (command name or None for any, parameter name) -> completer
_BY_PARAM: dict[tuple[str | None, str], Completer] = {
    (None, "job_ref"): _jobs,
    ("recover", "job"): _jobs,
    ("events", "subject"): _jobs,
    (None, "instance_id"): _instances,
    (None, "on"): _targets,
    ("rm", "name"): _hosts,
    ("list", "location"): _locations,
    ("cleanup", "location"): _locations,
    ("info", "path"): _locations,
}


def attach(command: click.Command) -> None:
    """Give ``command`` (and its subcommands) the completers above; used only while the shell
    asks for completions, so normal runs never pay for it."""
    for param in command.params:
        completer = _BY_PARAM.get((command.name, param.name or "")) or _BY_PARAM.get(
            (None, param.name or "")
        )
        if completer is not None and param._custom_shell_complete is None:
            param._custom_shell_complete = completer
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            attach(sub)
