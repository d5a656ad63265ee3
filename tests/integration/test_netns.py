"""A "remote" host in its own network namespace: faults injected with nft drop rules."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import CLI

pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def remote(cli: CLI, ssh_config: Path, netns_host: object) -> str:
    # Fail fast while the network is down so the reconnect loop is exercised quickly.
    ssh_config.write_text(ssh_config.read_text() + "connect_timeout_s = 3\n")
    name = netns_host.alias()  # type: ignore[attr-defined]
    done = cli("hosts", "add", name, "--remote-dir", f".runctl-ns-{time.time_ns()}")
    assert done.returncode == 0, done.stderr
    return str(name)


def test_hostname_is_the_namespace(cli: CLI, remote: str, project: Path) -> None:
    done = cli("exec", "--on", remote, "--", "hostname", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == remote


def test_follow_survives_network_drop_without_loss_or_repeat(
    cli: CLI, remote: str, project: Path, netns_host: object
) -> None:
    count = 150
    args = ["--lines", str(count), "--interval", "0.1"]
    job_done = cli("run", "--on", remote, "hello.py", "--", *args, cwd=project)
    assert job_done.returncode == 0, job_done.stderr
    job = job_done.stdout.strip().splitlines()[-1]
    follower = cli.popen("logs", job, "--follow")
    time.sleep(2.0)
    with netns_host.block():  # type: ignore[attr-defined]
        time.sleep(8.0)
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err
    assert "reconnecting" in err
    lines = [ln for ln in out.splitlines() if ln.startswith("line ")]
    assert lines == [f"line {i}" for i in range(1, count + 1)]
    assert json.loads(cli("status", job, "--json").stdout)["state"] == "succeeded"


def test_wait_rides_out_a_network_drop(
    cli: CLI, remote: str, project: Path, netns_host: object
) -> None:
    job = cli("run", "--on", remote, "hello.py", "--", "--lines", "40", "--interval", "0.1",
              "--exit-code", "6", cwd=project).stdout.strip().splitlines()[-1]  # fmt: skip
    waiter = cli.popen("wait", job)
    time.sleep(1.0)
    with netns_host.block():  # type: ignore[attr-defined]
        time.sleep(5.0)
    waiter.communicate(timeout=120)
    assert waiter.returncode == 6
