"""``--secret NAME`` and ``--env-file PATH``: shared by every command that submits a job."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

secret_options = [
    click.option("--secret", "secrets", multiple=True, metavar="NAME",
                 help="Give the job environment variable NAME from your environment as a "
                 "secret: never stored, shown or logged (repeatable)."),
    click.option("--env-file", "env_file", metavar="PATH",
                 help="Give the job the NAME=VALUE lines of this dotenv file, as secrets."),
]  # fmt: skip


def with_secret_options(fn: Any) -> Any:
    for option in reversed(secret_options):
        fn = option(fn)
    return fn


def resolve_secrets(
    names: Sequence[str], env_file: str | None
) -> tuple[dict[str, str], str | None]:
    """(name -> value, the env file's absolute path) for a submit request.

    Raises UsageError (exit 2) for an unreadable env file or a name unset in the environment.
    """
    from runctl.core import secret_env

    file_values: dict[str, str] | None = None
    path: str | None = None
    if env_file:
        resolved = Path(env_file).expanduser().resolve()
        file_values = secret_env.read_env_file(resolved)
        path = str(resolved)
    values = dict(file_values or {})
    values.update(secret_env.from_environment(names, os.environ, file_values=file_values))
    return values, path
