"""Fixtures for the state-truth tests: a registered host on the sshd stand, and ways to make
it vanish (a closed port, or a listener that never answers: a hung machine)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLI

HOST = "box"
# A final job's commands must not wait on its dead host longer than this (issue 18).
FAST_S = 5.0


@pytest.fixture
def remote(cli: CLI, ssh_config: Path) -> str:
    """``box``: the sshd stand (alias testhost) with a fresh runctl dir; returns that dir."""
    remote_dir = f".runctl-truth-{os.urandom(4).hex()}"
    done = cli("hosts", "add", HOST, "testhost", "--remote-dir", remote_dir, "--json")
    assert done.returncode == 0, done.stderr
    return remote_dir


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never says a word: ssh sees a hung
    machine (no banner), not a refusal."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # never accept(): the kernel completes the handshakes, nobody answers
    yield int(sock.getsockname()[1])
    sock.close()


def point_host_at(cli: CLI, remote_dir: str, port: int) -> None:
    """Re-register ``box`` at ``port`` on loopback (same name, same runctl dir): its jobs'
    host is gone. ssh's -p beats the alias's Port, and the ControlPath (per port) changes."""
    done = cli("hosts", "add", HOST, "testhost", "--port", str(port), "--remote-dir",
               remote_dir, "--replace", "--no-check")  # fmt: skip
    assert done.returncode == 0, done.stderr


def timed(
    cli: CLI, *args: str, cwd: Path | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = cli(*args, timeout=60, cwd=cwd)
    return time.monotonic() - started, done


# The clouds' stand-ins for the kill test: moto (AWS) and the fake RunPod, their machines'
# SSH endpoints on the sshd stand.
from tests.fakes.fixtures import runpod_fake  # noqa: E402
from tests.providers.aws.conftest import aws_ssh, moto_aws, moto_endpoint  # noqa: E402
from tests.resources.conftest import pods_ssh  # noqa: E402

__all__ = ["aws_ssh", "moto_aws", "moto_endpoint", "pods_ssh", "runpod_fake"]
