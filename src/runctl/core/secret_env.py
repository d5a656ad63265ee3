"""Secrets for jobs: values that reach a job's environment and are never stored.

A secret is named, never given on the command line: ``--secret NAME`` (and the config key
``jobs.secrets``) takes the value from the submitting shell's environment, ``--env-file PATH``
from a dotenv file. ``--env NAME=VALUE`` with a name that looks secret (``*_TOKEN``, ``*_KEY``,
``*SECRET*``, ``*PASSWORD*``, ``*_CREDENTIALS``) is treated the same way.

The job's recorded spec (state.db, job.json on the host, ``--json`` output) keeps only the
names, with the value shown as ``***``. The values travel to the agent on stdin with the start
request; the agent keeps them in a 0600 file in the job's 0700 directory, reads them into the
job's environment and deletes the file when the job ends. A restart (recovery, ``checkpoint
resume``) takes them again from the environment of the runctl that restarts the job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runctl.errors import UsageError

MASK = "***"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_RE = re.compile(r"(_TOKEN|_KEY|_CREDENTIALS)$|SECRET|PASSWORD", re.IGNORECASE)


def looks_secret(name: str) -> bool:
    """True for environment names that conventionally hold credentials."""
    return bool(_SECRET_RE.search(name))


def check_name(name: str, option: str = "--secret") -> str:
    """``name`` if it is a valid environment variable name; UsageError otherwise."""
    if not _NAME_RE.match(name):
        raise UsageError(
            f"invalid {option} name {name!r}",
            hint=f"give the variable's name ({option} HF_TOKEN); its value is read from "
            "your environment",
        )
    return name


def mask_env(env: Mapping[str, str], names: Iterable[str] = ()) -> dict[str, str]:
    """``env`` fit to show or record: values of secret(-looking) names replaced by ``***``."""
    hidden = set(names)
    return {k: MASK if k in hidden or looks_secret(k) else v for k, v in env.items()}


def from_environment(
    names: Iterable[str],
    environ: Mapping[str, str],
    *,
    file_values: Mapping[str, str] | None = None,
    origin: str = "--secret",
) -> dict[str, str]:
    """Look ``names`` up (in ``file_values`` first, then ``environ``).

    Raises UsageError (exit 2) naming every missing one, with how to provide it.
    """
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        check_name(name)
        if file_values is not None and name in file_values:
            found[name] = file_values[name]
        elif name in environ:
            found[name] = environ[name]
        else:
            missing.append(name)
    if missing:
        listed = ", ".join(missing)
        raise UsageError(
            f"secret {listed} ({origin}) is not set in this environment",
            hint=f"export {missing[0]}=... before running runctl, or put it in a file given "
            "with --env-file",
        )
    return found


def split_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``--env`` values into (plain, secret-looking): the latter travel as secrets."""
    plain = {k: v for k, v in env.items() if not looks_secret(k)}
    hidden = {k: v for k, v in env.items() if looks_secret(k)}
    return plain, hidden


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file: ``NAME=VALUE`` lines, ``export`` prefixes, ``#`` comments,
    single quotes (literal), double quotes (``\\n``, ``\\"``, ``\\\\`` escapes; may span lines).

    Raises UsageError with the line number (never the value) on malformed content.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read --env-file {path}: {reason}") from None
    values: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        lineno = index + 1
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, rest = line.partition("=")
        name = name.strip()
        if not sep or not _NAME_RE.match(name):
            raise UsageError(
                f"{path}:{lineno}: expected NAME=VALUE",
                hint="--env-file takes dotenv lines such as HF_TOKEN=hf_xxx",
            )
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            body = rest[1:]
            # A quoted value may continue on the following lines until its closing quote.
            while _closing(body, quote) < 0 and index < len(lines):
                body += "\n" + lines[index]
                index += 1
            end = _closing(body, quote)
            if end < 0:
                raise UsageError(f"{path}:{lineno}: unterminated {quote} quote in {name}")
            value = body[:end]
            if quote == '"':
                value = _unescape(value)
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        values[name] = value
    return values


def _closing(body: str, quote: str) -> int:
    """Index of the unescaped closing ``quote`` in ``body``, or -1."""
    i = 0
    while i < len(body):
        if quote == '"' and body[i] == "\\":
            i += 2
            continue
        if body[i] == quote:
            return i
        i += 1
    return -1


def _unescape(value: str) -> str:
    table = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}
    return re.sub(r"\\(.)", lambda m: table.get(m.group(1), "\\" + m.group(1)), value)


def for_restart(spec: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """The secrets a recorded job needs again, from its ``--env-file`` (if still readable) and
    ``environ``. Raises UsageError naming the missing ones."""
    names = [str(n) for n in spec.get("secrets") or []]
    file_values: dict[str, str] | None = None
    env_file = spec.get("env_file")
    if env_file and os.path.isfile(str(env_file)):
        file_values = read_env_file(Path(str(env_file)))
    return from_environment(names, environ, file_values=file_values, origin="needed to restart")
