"""Talking to the on-host agent: ship it (named by content hash) and call its sub-commands."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from runctl.errors import TransportError
from runctl.models import Completed, Instance
from runctl.transport.base import Transport
from runctl.transport.local import LocalTransport


@cache
def agent_source() -> bytes:
    return resources.files("runctl.agent").joinpath("runctl_agent.py").read_bytes()


def agent_hash() -> str:
    return hashlib.sha256(agent_source()).hexdigest()[:12]


def agent_path(instance: Instance, transport: Transport) -> str:
    """Where the agent lives on the host: the packaged file locally, a hashed copy remotely."""
    if isinstance(transport, LocalTransport):
        return str(resources.files("runctl.agent").joinpath("runctl_agent.py"))
    return f"{instance.remote_dir}/agent/runctl_agent_{agent_hash()}.py"


def is_agent_missing(done: Completed) -> bool:
    """Python's answer when the script file does not exist (exit 2, "can't open file")."""
    return done.returncode == 2 and b"can't open file" in done.stderr


def upload_agent(instance: Instance, transport: Transport) -> None:
    path = agent_path(instance, transport)
    script = 'mkdir -p "$(dirname "$1")" && cat > "$1.tmp.$$" && mv "$1.tmp.$$" "$1"'
    done = transport.run(["sh", "-c", script, "sh", path], input=agent_source(), timeout=60)
    if done.returncode != 0:
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
    return done


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
        raise TransportError(f"runctl agent {args[0]} failed on {instance.name}: {_err(done)}")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise TransportError(
            f"unexpected answer from the runctl agent on {instance.name}: {done.text[:200]!r}",
            hint="a login script on the host may print to stdout; make it quiet for "
            "non-interactive shells",
        ) from None


def _err(done: Completed) -> str:
    text = (done.stderr or done.stdout).decode(errors="replace").strip()
    return text.splitlines()[-1] if text else f"exit code {done.returncode}"


def local_agent_file() -> Path:
    return Path(str(resources.files("runctl.agent").joinpath("runctl_agent.py")))
