"""The dashboard and ``top --json`` against a real job on a loopback sshd host."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runctl import config
from runctl.runtime import Runtime
from runctl.tui.app import DashboardApp
from runctl.tui.widgets import ConfirmScreen, LogScreen
from tests.conftest import CLI, job_id_of, wait_for_log
from tests.tui.conftest import run_async, wait_for
from tests.tui.test_app import SIZE, column, rows

pytestmark = pytest.mark.integration


@pytest.fixture
def host(cli: CLI, ssh_config: Path, sshd: object) -> str:
    remote = f".runctl-top-{os.urandom(4).hex()}"
    done = cli("hosts", "add", "testhost", "--remote-dir", remote, "--hourly-usd", "0.35")
    assert done.returncode == 0, done.stderr
    return "testhost"


def test_dashboard_shows_live_job_log_telemetry_and_cancels(cli: CLI, host: str,
                                                            project: Path) -> None:  # fmt: skip
    job = job_id_of(cli("run", "--on", host, "hello.py", "--", "--lines", "3000",
                        "--interval", "0.05", cwd=project))  # fmt: skip
    wait_for_log(cli, job, "line 2")
    rt = Runtime(config=config.load(), home=config.home())

    async def body() -> None:
        from textual.widgets import Log

        app = DashboardApp(rt, interval_s=1.0)
        async with app.run_test(size=SIZE) as pilot:
            assert column(app, "jobs") == [job]  # first frame, straight from state
            telemetry = lambda: {r[0]: r for r in rows(app, "telemetry")}  # noqa: E731
            await wait_for(pilot, lambda: telemetry().get("testhost", [""] * 2)[1].endswith("%"))
            assert " GB" in telemetry()["testhost"][3]
            assert next(r[0:2] + r[3:5] for r in rows(app, "machines") if r[1] == "testhost") == [
                "ssh",
                "testhost",
                "registered",
                "$0.350",
            ]
            await wait_for(pilot, lambda: rows(app, "jobs")[0][5].startswith("line "))
            assert rows(app, "jobs")[0][1:3] == ["running", "ssh:testhost"]
            # l opens the live log, streamed from the host; it keeps growing
            await pilot.press("l")
            assert isinstance(app.screen, LogScreen)
            log = app.screen.query_one(Log)
            await wait_for(pilot, lambda: "line 1" in log.lines)
            assert "arg: '--lines'" in log.lines
            seen = len(log.lines)
            await wait_for(pilot, lambda: len(log.lines) > seen + 5)
            await pilot.press("escape")
            assert not isinstance(app.screen, LogScreen)
            await pilot.press("enter")  # Enter on a job row opens it too
            assert isinstance(app.screen, LogScreen)
            await pilot.press("escape")
            # c asks, then cancels through the agent
            await pilot.press("c")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(pilot, lambda: rows(app, "jobs")[0][1] == "cancelled", 60)
            assert rt.store.get_job(job).state == "cancelled"
            await pilot.press("q")
        assert app.return_code == 0

    run_async(body)


def test_top_json_prints_one_full_snapshot(cli: CLI, host: str, project: Path) -> None:
    job = job_id_of(cli("run", "--on", host, "hello.py", "--", "--lines", "2", cwd=project))
    assert cli("wait", job).returncode == 0
    done = cli("top", "--json")
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert {m["key"] for m in snap["machines"]} == {"local:local", "ssh:testhost"}
    (row,) = snap["jobs"]
    assert (row["job_id"], row["state"], row["exit_code"], row["last_line"]) == (
        job, "succeeded", 0, "line 2")  # fmt: skip
    assert snap["telemetry"]["ssh:testhost"]["memory"]["total_mb"] > 0
    assert snap["telemetry"]["ssh:testhost"]["cpu_percent"] is not None
    assert snap["costs"]["daily_budget_usd"] is None
    assert snap["errors"] == {}


def test_top_rejects_a_too_short_interval(cli: CLI) -> None:
    done = cli("top", "--interval", "0.1")
    assert done.returncode == 2
    assert "0.1" in done.stderr and "--interval" in done.stderr
