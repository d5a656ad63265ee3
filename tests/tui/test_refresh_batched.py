"""The dashboard's refresh asks each host once, for all its running jobs; finished jobs are
answered from state and the log tails kept here (a real job on a loopback sshd host)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from runctl import config
from runctl.core import agent
from runctl.runtime import Runtime
from runctl.tui import data
from tests.conftest import CLI, job_id_of, wait_for_log

pytestmark = pytest.mark.integration


@pytest.fixture
def host(cli: CLI, ssh_config: Path, sshd: object) -> str:
    remote = f".runctl-top-{os.urandom(4).hex()}"
    done = cli("hosts", "add", "testhost", "--remote-dir", remote)
    assert done.returncode == 0, done.stderr
    return "testhost"


@pytest.fixture
def agent_calls(monkeypatch: pytest.MonkeyPatch) -> list[Sequence[str]]:
    """Every agent sub-command this process runs on a host, in order."""
    calls: list[Sequence[str]] = []
    real = agent.call

    def counted(instance: Any, transport: Any, args: Sequence[str], **kw: Any) -> Any:
        calls.append(list(args))
        return real(instance, transport, args, **kw)

    monkeypatch.setattr(agent, "call", counted)
    return calls


def test_one_refresh_asks_the_host_once_for_all_its_running_jobs(
    cli: CLI, host: str, project: Path, agent_calls: list[Sequence[str]]
) -> None:
    done_job = job_id_of(cli("run", "--on", host, "hello.py", "--", "--lines", "2", cwd=project))
    assert cli("wait", done_job).returncode == 0
    assert cli("logs", done_job).returncode == 0  # seen to the end: its tail is kept here
    slow = ("run", "--on", host, "hello.py", "--", "--lines", "600", "--interval", "0.05")
    running = [job_id_of(cli(*slow, cwd=project)) for _ in range(3)]
    try:
        for job in running:
            wait_for_log(cli, job, "line 2")
        rt = Runtime(config=config.load(), home=config.home())

        lines: dict[str, str] = {}
        assert data.refresh_jobs(rt, lines) == {}
        (call,) = agent_calls  # one call for three running jobs, none for the finished one
        assert call[0] == "status" and sorted(call[-3:]) == sorted(running)
        assert done_job not in call
        assert set(lines) == set(running)
        assert all(line.startswith("line ") for line in lines.values()), lines

        agent_calls.clear()
        assert data.last_lines(rt, [done_job]) == {done_job: "line 2"}
        assert agent_calls == []  # from the kept tail, not the host

        snap = data.collect(rt)  # `top --json`: the same single call per host
        assert snap.errors == {}
        assert [c[0] for c in agent_calls] == ["status"]
        rows = {j.job_id: j for j in snap.jobs}
        assert rows[done_job].last_line == "line 2"
        assert all(rows[j].state == "running" and rows[j].last_line.startswith("line ")
                   for j in running)  # fmt: skip
    finally:
        for job in running:
            cli("cancel", job)
