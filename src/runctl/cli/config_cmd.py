"""``runctl init`` and ``runctl config show|set|validate``."""

from __future__ import annotations

from pathlib import Path

import click

from runctl.cli.output import emit, get_ctx, json_option, table
from runctl.errors import ConflictError, UsageError


@click.command()
@click.option("--path", "--config-path", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write (default: ./.runctl.toml).")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@json_option
def init(path: Path | None, force: bool) -> None:
    """Write a commented config file listing every key with its default.

    \b
    Examples:
      runctl init
      runctl init --path ~/.config/runctl/config.toml --force
    """
    from runctl import config

    target = path or Path(config.PROJECT_FILE)
    if target.exists() and not force:
        raise ConflictError(f"{target} already exists", hint="pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(config.default_file_text())
    emit({"path": str(target)}, f"wrote {target}")


@click.group()
def config() -> None:
    """Show, set and validate configuration (TOML; every key optional).

    \b
    Examples:
      runctl config show
      runctl config set jobs.grace_s 30
      runctl config validate .runctl.toml
    """


@config.command(name="show")
@json_option
def config_show() -> None:
    """Print every key with its effective value and where it came from.

    \b
    Examples:
      runctl config show
      runctl config show --json
    """
    from runctl import config as cfgmod

    rt = get_ctx().runtime()
    cfg = rt.config
    derived = _derived_defaults(rt.home)
    rows = [(k, cfgmod.shown(k, cfg.get(k)), cfg.sources.get(k, "default"))
            for k in cfgmod.SCHEMA]  # fmt: skip
    # A blank default stands for a value worked out at run time: show that value.
    rows = [(k, derived[k] if v == "" and k in derived else v, s) for k, v, s in rows]
    data = {
        "values": {k: v for k, v, _ in rows},
        "sources": {k: s for k, _, s in rows},
        "files": [str(f) for f in cfg.files],
        "home": str(cfgmod.home()),
    }
    emit(data, lambda: table(["key", "value", "source"], rows))


def _derived_defaults(home: Path) -> dict[str, str]:
    """What the keys whose default is blank mean here and now (as jobs.py/providers use them)."""
    import sys

    from runctl.core.sync_select import find_project_root

    return {
        "defaults.project": find_project_root(Path.cwd() / "SCRIPT").name,
        "local.checkpoint_dir": str(home / "local" / "checkpoints"),
        "local.python": sys.executable,
        "ssh.config_file": str(Path("~/.ssh/config").expanduser()),
    }


@config.command(name="set")
@click.argument("key")
@click.argument("value")
@click.option("--global", "global_", is_flag=True, help="Write the user config instead of "
              "./.runctl.toml.")  # fmt: skip
@json_option
def config_set(key: str, value: str, global_: bool) -> None:
    """Set KEY to VALUE in ./.runctl.toml (or the user config with --global).

    \b
    Examples:
      runctl config set jobs.grace_s 30
      runctl config set defaults.on ssh:gpu1 --global
    """
    from runctl import config as cfgmod

    ctx = get_ctx()
    if ctx.config_path:
        path = Path(ctx.config_path)
    elif global_:
        path = cfgmod.user_config_path()
    else:
        path = Path(cfgmod.PROJECT_FILE)
        if cfgmod.SCHEMA.get(key) is not None and cfgmod.SCHEMA[key].secret:
            # A project file tends to end up in git; keys belong in the user's own file.
            raise UsageError(
                f"{key} is a secret; refusing to write it into {path}",
                hint=f"use `runctl config set --global {key} ...` or the environment variable",
            )
    typed = cfgmod.shown(key, cfgmod.set_value(path, key, value))
    emit({"key": key, "value": typed, "path": str(path)}, f"{key} = {typed!r} in {path}")


@config.command(name="validate")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def config_validate(path: Path | None) -> None:
    """Check PATH (or every config file in effect) for syntax, unknown keys and types.

    \b
    Examples:
      runctl config validate
      runctl config validate .runctl.toml
    """
    from runctl import config as cfgmod

    if path is not None:
        if not path.is_file():
            from runctl.errors import NotFoundError

            raise NotFoundError(f"config file not found: {path}")
        cfgmod.read_file(path)
        files = [str(path)]
    else:
        files = [str(f) for f in get_ctx().runtime().config.files]
    where = f": {', '.join(files)}" if files else " (no config files; defaults)"
    emit({"valid": True, "files": files}, "valid" + where)
