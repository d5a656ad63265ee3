"""Spellings of the original (Rust) runctl that keep working, each with one note on stderr.

The seed had clap "global" options: ``--output json|text|table|instance-id`` and ``-v`` were
accepted anywhere on the line (``runctl aws create t3.micro --output instance-id``). Click
options belong to one command, so :func:`rewrite_args` moves or translates them before click
parses: ``--output json`` becomes the root ``--json``, ``--output text|table`` is the default
and dropped, ``-v`` after a sub-command moves to the root. Commands that have their own
``--output`` (``workflow train --output DIR``, ``aws create --output instance-id``) keep it,
and nothing after a SCRIPT is touched (it belongs to the script).
docs/migrating.md lists every old spelling and tests/seed/ runs the seed's documented lines.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

log = logging.getLogger("runctl")
F = TypeVar("F", bound=Callable[..., Any])


def note(old: str, new: str) -> None:
    """One line on stderr naming today's spelling (stdout stays clean for --json and ids)."""
    click.echo(f"note: `{old}` is an old runctl spelling; today: `{new}`", err=True)


def _leaf(group: click.Group, args: Sequence[str]) -> tuple[click.Command, int, list[int]]:
    """The command ``args`` select, resolved the way click will (options skipped); the index
    where its own options stop being parsed (its first positional, for commands that pass
    everything after SCRIPT to the script; else the end); the indices of its positionals."""
    ctx = click.Context(group)
    cmd: click.Command = group
    skip = False
    stop = len(args)
    positionals: list[int] = []
    for i, tok in enumerate(args):
        if skip:
            skip = False
            continue
        if tok.startswith("-") and tok != "-":
            skip = _takes_value(cmd, tok) and "=" not in tok
            continue
        if not isinstance(cmd, click.Group):
            interspersed = cmd.context_settings.get("allow_interspersed_args",
                                                    cmd.allow_interspersed_args)  # fmt: skip
            if not interspersed and stop == len(args):
                stop = i
            positionals.append(i)
            continue
        sub = cmd.get_command(ctx, tok)
        if sub is None:
            break
        cmd = sub
    return cmd, stop, positionals


def _takes_value(cmd: click.Command, tok: str) -> bool:
    for param in cmd.params:
        if isinstance(param, click.Option) and tok in param.opts + param.secondary_opts:
            return not param.is_flag and not param.count
    return False


_ID_FLAGS = ("--pod-id", "--vm-id")
_ID_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{3,}$")


def _positional_id(leaf: click.Command, head: list[str], positionals: list[int]) -> list[str]:
    """``runpod train POD SCRIPT``, ``runpod monitor POD``: the seed took the pod id as the
    first argument; today it is ``--pod-id POD``. Rewritten when the id option is missing,
    the first argument looks like an id (not a local path) and one is left for the others."""
    flag = next((f for f in _ID_FLAGS if _has_option(leaf, f)), None)
    if flag is None or not positionals or any(t == flag or t.startswith(flag + "=") for t in head):
        return head
    first = head[positionals[0]]
    required = sum(1 for p in leaf.params if isinstance(p, click.Argument) and p.required)
    if not _ID_SHAPE.match(first) or Path(first).exists() or len(positionals) <= required:
        return head
    i = positionals[0]
    out = [*head[:i], flag, first, *head[i + 1 :]]
    new = [flag, first]
    # `runpod download POD REMOTE LOCAL`: today's --remote/--local take the next two.
    rest = [p + 1 for p in positionals[1:]]
    for option in ("--remote", "--local"):
        if rest and _has_option(leaf, option) and option not in head:
            j = rest.pop(0)
            new += [option, out[j]]
            out[j : j + 1] = [option, out[j]]
            rest = [r + 1 for r in rest]
    note(f"{leaf.name} {' '.join(new[1::2])}", f"{leaf.name} {' '.join(new)}")
    return out


def _has_option(cmd: click.Command, name: str) -> bool:
    return any(name in p.opts or name in p.secondary_opts for p in cmd.params)


def rewrite_args(group: click.Group, args: list[str]) -> list[str]:
    """Translate the seed's global ``--output FMT`` and ``-v/--verbose``, and its positional
    pod/VM ids, into what ``group`` (the click tree) parses today."""
    cut = args.index("--") if "--" in args else len(args)
    head, tail = list(args[:cut]), list(args[cut:])
    wants_output = any(t == "--output" or t.startswith("--output=") for t in head)
    wants_verbose = any(t in ("-v", "--verbose") for t in head)
    wants_id = any(t in ("runpod", "lyceum") for t in head)
    if not (wants_output or wants_verbose or wants_id):
        return args
    leaf, stop, positionals = _leaf(group, head)
    if wants_id:
        head = _positional_id(leaf, head, positionals)
        leaf, stop, positionals = _leaf(group, head)
    head, tail = head[:stop], head[stop:] + tail
    wants_verbose = any(t in ("-v", "--verbose") for t in head)
    front: list[str] = []
    if wants_verbose and not _has_option(leaf, "-v") and not _has_option(leaf, "--verbose"):
        # clap's global -v: allowed after the sub-command too; click wants it at the root.
        front.append("-v")
        head = [t for t in head if t not in ("-v", "--verbose")]
    if wants_output and not _has_option(leaf, "--output"):
        kept: list[str] = []
        i = 0
        while i < len(head):
            tok = head[i]
            if tok == "--output" and i + 1 < len(head):
                value, i = head[i + 1], i + 2
            elif tok.startswith("--output="):
                value, i = tok.split("=", 1)[1], i + 1
            else:
                kept.append(tok)
                i += 1
                continue
            if value.lower() == "json":
                note(f"--output {value}", "--json")
                front.append("--json")
            else:
                note(f"--output {value}", "(no option: text is the default)")
        head = kept
    return front + head + tail


def legacy_output(value: str | None, id_format: str, id_option: str) -> bool:
    """A command's own old ``--output FMT``: True when it asked for just the id
    (``id_format``, today ``id_option``); ``json`` turns --json on; text/table are the default."""
    if value is None:
        return False
    value = value.lower()
    if value == id_format:
        note(f"--output {value}", id_option)
        return True
    if value == "json":
        note("--output json", "--json")
        from runctl.cli.output import get_ctx

        get_ctx().json = True
    else:
        note(f"--output {value}", "(no option: text is the default)")
    return False


def force_means_yes(fn: F) -> F:
    """The seed's ``-f/--force`` on confirming commands (``resources cleanup --force``): a
    hidden flag the command ORs into ``--yes`` (passed as ``seed_force``)."""

    def warn(_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            note("--force", "--yes")
        return value

    return click.option("-f", "--force", "seed_force", is_flag=True, hidden=True,
                        callback=warn)(fn)  # fmt: skip


def exec_kind(command: str) -> str:
    """``exec`` runs COMMAND as it is, except a ``.py`` file here: the seed ran those like
    ``local`` does (uv run / python), so they go as a script instead of failing with 126."""
    if command.endswith(".py") and Path(command).is_file():
        note(f"exec {command}", f"runctl local {command}")
        return "script"
    return "command"


class HiddenArgument(click.Argument):
    """An argument left out of the usage line: a legacy form's extra words."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return []


def resume_script(checkpoint: str, rest: Sequence[str], resume_arg: bool, follow: bool) -> None:
    """The seed's ``checkpoint resume CHECKPOINT SCRIPT [-- ARGS]``: it printed
    ``SCRIPT --resume CHECKPOINT``; here that runs, as a local job resuming from CHECKPOINT
    (RUNCTL_RESUME_FROM, and ``--resume CHECKPOINT`` unless --no-resume-arg)."""
    from runctl.cli.jobs import run
    from runctl.errors import NotFoundError, UsageError

    args = list(rest)  # click already took the `--` of `SCRIPT -- ARGS`
    if not args:
        raise UsageError(
            f"{checkpoint!r} is not a job, and no SCRIPT was given",
            hint="runctl checkpoint resume JOB, or runctl checkpoint resume CHECKPOINT SCRIPT",
        )
    script, script_args = args[0], args[1:]
    path = Path(checkpoint)
    if not path.exists():
        raise NotFoundError(f"checkpoint not found: {checkpoint}",
                            hint="see `runctl checkpoint list DIR`")  # fmt: skip
    absolute = str(path.resolve())
    extra = ["--resume", absolute] if resume_arg else []
    shown = " ".join(["--resume", checkpoint] if resume_arg else [])
    note(
        f"checkpoint resume {checkpoint} {script}",
        f"runctl run {script} --resume-from {checkpoint}" + (f" -- {shown}" if shown else ""),
    )
    ctx = click.get_current_context()
    ctx.invoke(run, script=script, script_args=(*extra, *script_args), follow=follow,
               resume_from=absolute)  # fmt: skip


# ------------------------------------------------------------------------------ verbose

_verbose = False


def enable_verbose() -> None:
    """-v/--verbose: runctl's debug log on stderr, and every command runctl starts."""
    global _verbose
    if _verbose:
        return
    _verbose = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("runctl: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    sys.addaudithook(_audit)


def disable_verbose() -> None:
    """Undo :func:`enable_verbose` (the audit hook stays, inert): in-process test runs."""
    global _verbose
    _verbose = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.setLevel(logging.NOTSET)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _verbose and event == "subprocess.Popen":
        import shlex

        argv = args[1]
        shown = argv if isinstance(argv, str | bytes) else shlex.join(str(a) for a in argv)
        log.debug("exec: %s", shown)
