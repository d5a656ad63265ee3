"""Every command's --help shows 1-3 real example lines, and each of them parses as written.

Walks the whole click tree (the lazy group's commands and every subcommand), so a command
added without examples, or an example whose flags were renamed, fails here.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from runctl.cli import cli
from runctl.cli.output import Ctx


def _root_ctx() -> click.Context:
    return click.Context(cli, info_name="runctl", obj=Ctx(config_path=None, json=False))


def _walk(cmd: click.Command, path: list[str], ctx: click.Context) -> Iterator[list[str]]:
    if path:
        yield path
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(
                    sub, [*path, name], click.Context(sub, info_name=name, parent=ctx)
                )


COMMANDS = list(_walk(cli, [], _root_ctx()))


def _examples(help_text: str) -> list[str]:
    """The lines of the "Examples:" block of a rendered --help."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Examples:")
    block: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        block.append(line.strip())
    return block


def _parse(line: str, cwd: Path) -> None:
    """Parse an example with the real command tree (options, choices, arity); invoke nothing."""
    args = shlex.split(line, comments=True)
    for operator in (">", "|", "&&"):  # `runctl completion bash > FILE`: the command part
        if operator in args:
            args = args[: args.index(operator)]
    assert args[0] == "runctl", line
    cmd: click.Command = cli
    ctx = _root_ctx()
    args = args[1:]
    while isinstance(cmd, click.Group) and args and args[0] in cmd.list_commands(ctx):
        sub = cmd.get_command(ctx, args[0])
        assert sub is not None
        ctx = click.Context(sub, info_name=args[0], parent=ctx)
        cmd, args = sub, args[1:]
    cmd.make_context(ctx.info_name, list(args), parent=ctx.parent)


def test_the_tree_is_whole() -> None:
    # A sanity floor: the lazy group really was walked into every noun's subcommands.
    assert len(COMMANDS) > 80
    assert ["aws", "ebs", "snapshot-list"] in COMMANDS and ["runpod", "train"] in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_command_help_shows_examples_that_parse(
    path: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runctl_home: Path
) -> None:
    done = CliRunner().invoke(cli, [*path, "--help"], prog_name="runctl")
    assert done.exit_code == 0, done.output
    examples = _examples(done.output)
    assert 1 <= len(examples) <= 3, done.output
    # The files examples name exist, as they would in a user's project.
    for name in ("data", "outputs", "checkpoints"):
        (tmp_path / name).mkdir()
    for name in ("train.py", "model.pt", "train.log", ".runctl.toml"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    for line in examples:
        assert line.startswith(f"runctl {' '.join(path)}") or line.startswith("runctl "), line
        _parse(line, tmp_path)


def test_group_help_examples_use_their_own_subcommands() -> None:
    for path in COMMANDS:
        done = CliRunner().invoke(cli, [*path, "--help"], prog_name="runctl")
        first = _examples(done.output)[0]
        # `runctl docker --help` may also show `runctl run --docker`; most examples are its own.
        assert first.startswith(f"runctl {path[0]}"), (path, first)
