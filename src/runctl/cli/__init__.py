"""The ``runctl`` command line: a lazy click group and the one error handler.

Sub-commands are imported only when invoked, so ``runctl --help`` costs little more than
starting Python. Every RunctlError becomes ``Error: ...`` plus ``hint: ...`` on stderr (and a
JSON error object on stdout under --json) with its documented exit code; tracebacks only with
RUNCTL_DEBUG=1.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from runctl import __version__
from runctl.entry import COMMANDS, ROOT_HELP


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use (click docs, "complex" example)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kw: Any):
        super().__init__(*args, **kw)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.lazy)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self.lazy.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        if os.environ.get("_RUNCTL_COMPLETE"):  # the shell asks for completions
            from runctl.cli.completion import attach

            attach(command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text from the table above, so listing commands imports none of them.
        rows = [(name, help_text) for name, (_, help_text) in self.lazy.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    help=ROOT_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file to use on top of the user and project files.")  # fmt: skip
@click.option("--json", "json_", is_flag=True, help="Print JSON on stdout (every command).")
@click.option("-v", "--verbose", is_flag=True,
              help="More detail on stderr: targets, API calls, commands run.")  # fmt: skip
@click.version_option(__version__, prog_name="runctl")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, json_: bool, verbose: bool) -> None:
    """The root group; its help text lives in runctl.entry (shared with the fast path)."""
    from runctl.cli.output import Ctx

    if verbose:
        from runctl.cli.seed_compat import enable_verbose

        enable_verbose()
    ctx.obj = Ctx(config_path=config_path, json=json_)
    _parsed.append(ctx.obj)


# The root context of this run once click has parsed it: after that, whether --json was given
# is what click parsed, not a guess from argv (`run train.py --json` hands --json to the script).
_parsed: list[Any] = []


def _json_wanted(guess: bool) -> bool:
    return bool(_parsed[-1].json) if _parsed else guess


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn every failure into one clean message."""
    from runctl.errors import RunctlError

    debug = os.environ.get("RUNCTL_DEBUG") == "1"
    args = sys.argv[1:] if argv is None else argv
    if {"--output", "-v", "--verbose", "runpod", "lyceum"} & set(args) or any(
        a.startswith("--output=") for a in args
    ):
        from runctl.cli.seed_compat import rewrite_args

        args = rewrite_args(cli, list(args))
    want_json = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    try:
        cli.main(args=args, prog_name="runctl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _report(exc.format_message(), _usage_hint(exc), exc.exit_code, want_json)
    except click.exceptions.Abort:
        _report("aborted", None, 130, want_json)
    except KeyboardInterrupt:
        if debug:
            raise
        _report("interrupted", None, 130, want_json)
    except RunctlError as exc:
        if debug:
            raise
        _report(exc.message, exc.hint, exc.exit_code, _json_wanted(want_json))
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error worth reporting.
        sys.stderr.close()
        sys.exit(0)
    except Exception as exc:
        if debug:
            raise
        typed = _world_failure(exc)
        if typed is not None:
            _report(typed.message, typed.hint, typed.exit_code, _json_wanted(want_json))
        _report(
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a bug in runctl; rerun with RUNCTL_DEBUG=1 for a traceback and report it",
            70,
            _json_wanted(want_json),
        )
    sys.exit(0)


def _world_failure(exc: Exception) -> Any:
    """A typed error for failures of the world that escaped their command: a full disk, an
    unwritable or looping path, a state database that went bad mid-command. None for bugs."""
    from runctl.errors import from_os_error

    if isinstance(exc, OSError):
        return from_os_error(exc)
    if isinstance(exc, ValueError) and "null byte" in str(exc):
        from runctl.errors import UsageError

        return UsageError("an argument contains a NUL byte", hint="remove it and retry")
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        from runctl.state.db import typed_error

        return typed_error(exc, None)
    return None


def _usage_hint(exc: click.ClickException) -> str | None:
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.NoSuchOption) and ctx is not None and ctx.info_name in (
        "run", "local", "exec",
    ):  # fmt: skip
        return (
            f"runctl's options go before SCRIPT and the script's after SCRIPT, e.g. "
            f"`runctl {ctx.info_name} train.py {exc.option_name} ...`"
        )
    if ctx is not None:
        return f"see `{ctx.command_path} --help`"
    return None


def _report(message: str, hint: str | None, code: int, want_json: bool) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "error"
    click.echo(f"Error: {first}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    output = sys.modules.get("runctl.cli.output")
    if want_json and not getattr(output, "json_emitted", False):
        # stdout carries exactly one JSON document: the command's own result, or this error.
        import json

        click.echo(json.dumps({"error": {"message": first, "hint": hint, "exit_code": code}}))
    sys.exit(code)
