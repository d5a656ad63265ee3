"""Talking to the on-host agent: ship it (named by content hash) and call its sub-commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from runctl.errors import FileSystemError, RunctlError, TransportError
from runctl.models import Completed, Instance
from runctl.transport.base import Transport
from runctl.transport.local import LocalTransport


@cache
def _packaged() -> Any:
    # importlib.resources and hashlib load lazily: `jobs`/`status` on local jobs need neither.
    from importlib import resources

    return resources.files("runctl.agent").joinpath("runctl_agent.py")


@cache
def agent_source() -> bytes:
    return bytes(_packaged().read_bytes())


def agent_hash() -> str:
    import hashlib

    return hashlib.sha256(agent_source()).hexdigest()[:12]


def agent_path(instance: Instance, transport: Transport) -> str:
    """Where the agent lives on the host: the packaged file locally, a hashed copy remotely."""
    if isinstance(transport, LocalTransport):
        return str(_packaged())
    return f"{instance.remote_dir}/agent/runctl_agent_{agent_hash()}.py"


def is_agent_missing(done: Completed) -> bool:
    """Python's answer when the script file does not exist (exit 2, "can't open file")."""
    return done.returncode == 2 and b"can't open file" in done.stderr


def upload_agent(instance: Instance, transport: Transport) -> None:
    path = agent_path(instance, transport)
    # umask 077: the first thing runctl creates on a host is its base dir, private (0700).
    script = 'umask 077 && mkdir -p "$(dirname "$1")" && cat > "$1.tmp.$$" && mv "$1.tmp.$$" "$1"'
    done = transport.run(["sh", "-c", script, "sh", path], input=agent_source(), timeout=60)
    if done.returncode != 0:
        failure = host_failure(done, instance.name, "cannot install the runctl agent")
        if isinstance(failure, FileSystemError):
            raise failure
        raise TransportError(
            f"cannot install the runctl agent on {instance.name}: {_err(done)}",
            hint=f"check that {instance.remote_dir} is writable on the host",
        )


def call(
    instance: Instance,
    transport: Transport,
    args: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float | None = 60,
) -> Completed:
    """Run an agent sub-command, installing the agent first if the host lacks this version."""
    argv = [transport.python, agent_path(instance, transport), *args]
    done = transport.run(argv, input=input, timeout=timeout)
    if is_agent_missing(done):
        upload_agent(instance, transport)
        done = transport.run(argv, input=input, timeout=timeout)
    if done.returncode == 127 or b"python3: not found" in done.stderr:
        raise TransportError(
            f"{transport.python} not found on {instance.name}",
            hint="install python3 on the host or set its interpreter with `runctl hosts add "
            "--python PATH`",
        )
    _relay_notices(instance, done.stderr)
    return done


def _relay_notices(instance: Instance, stderr: bytes) -> None:
    """Show the agent's one-line notices (a runctl dir it made private) on our stderr."""
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("runctl: ") and "open to other users" in line:
            sys.stderr.write(f"runctl: {instance.name}: {line[len('runctl: ') :]}\n")


def call_json(
    instance: Instance,
    transport: Transport,
    args: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float | None = 60,
) -> Any:
    done = call(instance, transport, args, input=input, timeout=timeout)
    if done.returncode != 0:
        raise host_failure(done, instance.name, f"runctl agent {args[0]} failed")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise TransportError(
            f"unexpected answer from the runctl agent on {instance.name}: {done.text[:200]!r}",
            hint="a login script on the host may print to stdout; make it quiet for "
            "non-interactive shells",
        ) from None


def _err(done: Completed) -> str:
    return summary(done)


# OS failures worth naming over the last line of a traceback (which may be only `^^^^`).
_CAUSES = ("No space left on device", "Disk quota exceeded", "Read-only file system",
           "Permission denied", "Too many levels of symbolic links")  # fmt: skip


def summary(done: Completed) -> str:
    """One line saying why an agent call failed: a named OS cause, else the last real line."""
    text = (done.stderr or done.stdout).decode(errors="replace").strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().strip("^~ ")]
    for cause in _CAUSES:
        hit = next((ln for ln in reversed(lines) if cause in ln), None)
        if hit is not None:
            return hit
    return lines[-1] if lines else f"exit code {done.returncode}"


def host_failure(done: Completed, host: str, doing: str) -> RunctlError:
    """The typed error for a failed agent call: a full or read-only disk on the host is a
    filesystem error (exit 11) with its cause; anything else a transport error."""
    line = summary(done)
    if "No space left on device" in line or "Disk quota exceeded" in line:
        return FileSystemError(
            f"{doing} on {host}: no space left on device ({line[-200:]})",
            hint=f"free space on {host} (e.g. `runctl jobs prune`) and retry",
        )
    if "Read-only file system" in line or "Permission denied" in line:
        return FileSystemError(
            f"{doing} on {host}: {line[-200:]}",
            hint=f"check that runctl's directory on {host} is writable",
        )
    return TransportError(f"{doing} on {host}: {line[-300:]}")


def local_agent_file() -> Path:
    return Path(str(_packaged()))
