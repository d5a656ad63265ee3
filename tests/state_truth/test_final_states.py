"""A final state is final, and final jobs answer from state: when a job's host is gone (a
closed port, a hung machine), its agent died, its directory was wiped, or its submit never
reached the host, `status`, `logs`, `wait` and `top` answer within seconds and never rewrite
the recorded outcome."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from runctl.state.store import Store
from tests.conftest import CLI, job_id_of
from tests.state_truth.conftest import FAST_S, closed_port, point_host_at, timed

pytestmark = pytest.mark.integration

SLEEPY = "import time\nprint('ready', flush=True)\ntime.sleep(120)\n"


def _job(cli: CLI, job_id: str) -> dict[str, Any]:
    done = cli("jobs", "--no-refresh", "-n", "100", "--json")
    return next(j for j in json.loads(done.stdout) if j["job_id"] == job_id)


def _host_path(sshd: Any, remote_dir: str) -> Path:
    return Path(pwd.getpwnam(sshd.user).pw_dir) / remote_dir


def _finished_jobs(cli: CLI, project: Path) -> dict[str, str]:
    """Three finished jobs on box: succeeded (log read once), failed 3, cancelled."""
    (project / "sleepy.py").write_text(SLEEPY)
    ok = job_id_of(cli("run", "--on", "box", "hello.py", "--", "--lines", "2", cwd=project))
    bad = job_id_of(cli("run", "--on", "box", "hello.py", "--", "--exit-code", "3", cwd=project))
    slow = job_id_of(cli("run", "--on", "box", "sleepy.py", cwd=project))
    assert cli("wait", ok).returncode == 0
    assert cli("wait", bad).returncode == 3
    assert cli("cancel", slow, "--grace", "1").returncode == 0
    assert "line 2" in cli("logs", ok).stdout  # seen final: its tail is kept here
    return {"ok": ok, "bad": bad, "cancelled": slow}


@pytest.mark.parametrize("gone", ["refused", "hung"])
def test_final_jobs_answer_within_seconds_when_their_host_is_gone(
    cli: CLI, remote: str, project: Path, silent_port: int, gone: str
) -> None:
    jobs = _finished_jobs(cli, project)
    point_host_at(cli, remote, closed_port() if gone == "refused" else silent_port)

    for name, job in jobs.items():
        took, status = timed(cli, "status", job, "--json")
        assert took < FAST_S, (name, took)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["state"] == {"ok": "succeeded", "bad": "failed"}.get(name, "cancelled")
        assert data["host_error"]  # says why the host added nothing
        took, waited = timed(cli, "wait", job, "--json")
        assert took < FAST_S, (name, took)
        assert waited.returncode == {"ok": 0, "bad": 3}.get(name, waited.returncode)
        assert json.loads(waited.stdout)["state"] == data["state"]

    took, logs = timed(cli, "logs", jobs["ok"])  # the tail kept when it was seen final
    assert took < FAST_S and logs.returncode == 0, logs.stderr
    assert "line 2" in logs.stdout and "kept here" in logs.stderr
    took, logs = timed(cli, "logs", jobs["bad"])  # never read: nothing kept, the host is gone
    assert took < FAST_S, took
    assert logs.returncode == 7, logs.stderr
    why = "Connection refused" if gone == "refused" else "no answer"
    assert why in logs.stderr and "Traceback" not in logs.stderr

    took, top = timed(cli, "top", "--json")
    assert took < FAST_S, took
    assert top.returncode == 0, top.stderr
    states = {j["job_id"]: j["state"] for j in json.loads(top.stdout)["jobs"]}
    assert states == {jobs["ok"]: "succeeded", jobs["bad"]: "failed",
                      jobs["cancelled"]: "cancelled"}  # fmt: skip
    took, listed = timed(cli, "jobs", "--json")  # final jobs: no host is asked
    assert took < FAST_S and listed.returncode == 0
    assert "unreachable" not in listed.stderr


def test_a_submit_that_never_reached_its_host_is_failed_and_answers_at_once(
    cli: CLI, project: Path
) -> None:
    done = cli("run", "--on", f"ssh:127.0.0.1:{closed_port()}", "hello.py", cwd=project)
    assert done.returncode == 7, done.stderr
    assert "Connection refused" in done.stderr
    job = json.loads(cli("jobs", "--json").stdout)[0]
    assert job["state"] == "failed"

    took, status = timed(cli, "status", job["job_id"], "--json")
    assert took < FAST_S and status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "failed"
    took, logs = timed(cli, "logs", job["job_id"])
    assert took < FAST_S, took
    assert logs.returncode == 5, logs.stderr  # not found: there never was a log
    assert "before it started" in logs.stderr and "Connection refused" in logs.stderr
    took, waited = timed(cli, "wait", job["job_id"])
    assert took < FAST_S and waited.returncode == 1, waited.stderr
    took, cancelled = timed(cli, "cancel", job["job_id"])
    assert took < FAST_S and cancelled.returncode == 0, cancelled.stderr
    took, top = timed(cli, "top", "--json")
    assert took < FAST_S and top.returncode == 0, top.stderr


def test_a_wiped_job_dir_keeps_the_outcome_and_logs_says_the_log_is_gone(
    cli: CLI, remote: str, project: Path, sshd: Any, runctl_home: Path
) -> None:
    jobs = {
        "ok": job_id_of(cli("run", "--on", "box", "hello.py", cwd=project)),
        "bad": job_id_of(cli("run", "--on", "box", "hello.py", "--", "--exit-code", "4",
                             cwd=project)),
    }  # fmt: skip
    assert cli("wait", jobs["ok"]).returncode == 0
    assert cli("wait", jobs["bad"]).returncode == 4
    shutil.rmtree(_host_path(sshd, remote) / "jobs")  # the host was wiped

    logs = cli("logs", jobs["ok"])
    assert logs.returncode == 5 and logs.stdout == ""
    assert "is gone from" in logs.stderr and "recorded succeeded" in logs.stderr
    status = json.loads(cli("status", jobs["bad"], "--json").stdout)
    assert status["state"] == "failed" and status["exit_code"] == 4
    assert status["job_dir_missing"] is True
    top = json.loads(cli("top", "--json").stdout)
    assert {j["job_id"]: j["state"] for j in top["jobs"]} == {jobs["ok"]: "succeeded",
                                                              jobs["bad"]: "failed"}  # fmt: skip
    for job in jobs.values():
        changes = [e for e in Store.open(runctl_home / "state.db").list_events(job)
                   if e["kind"] == "job.state"]  # fmt: skip
        assert all(e["data"]["from"] not in ("succeeded", "failed") for e in changes), changes


def test_a_job_whose_agent_was_killed_is_lost_and_answers_at_once(
    cli: CLI, remote: str, project: Path, runctl_home: Path
) -> None:
    (project / "sleepy.py").write_text(SLEEPY)
    job = job_id_of(cli("run", "--on", "box", "sleepy.py", cwd=project))
    agent_pid = Store.open(runctl_home / "state.db").get_job(job).pid
    assert agent_pid
    os.kill(agent_pid, signal.SIGKILL)  # the supervising agent dies on the host
    deadline = time.monotonic() + 15
    while _job(cli, job)["state"] != "lost" and time.monotonic() < deadline:
        cli("jobs")  # one refresh sees the agent gone
        time.sleep(0.2)
    assert _job(cli, job)["state"] == "lost"

    for args in (("status", job, "--json"), ("logs", job), ("top", "--json"), ("jobs",)):
        took, done = timed(cli, *args)
        assert took < FAST_S, (args, took)
        assert done.returncode == 0, (args, done.stderr)
    took, waited = timed(cli, "wait", job)
    assert took < FAST_S and waited.returncode == 1, waited.stderr
    assert "ready" in cli("logs", job).stdout
    # Cancelling a lost job still stops what the agent left running: its process group.
    done = cli("cancel", job, "--grace", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "cancelled"


def test_a_refused_login_stops_wait_and_logs_at_once_with_ssh_saying_why(
    cli: CLI, remote: str, project: Path
) -> None:
    (project / "sleepy.py").write_text(SLEEPY)
    job = job_id_of(cli("run", "--on", "box", "sleepy.py", cwd=project))
    # The host is there but no longer lets us in: retrying for ssh.reconnect_timeout_s
    # (300 s) cannot help.
    done = cli("hosts", "add", "box", "testhost", "--user", "nosuchuser", "--remote-dir",
               remote, "--replace", "--no-check")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for args in (("wait", job), ("logs", job, "--follow")):
        took, done = timed(cli, *args)
        assert took < FAST_S, (args, took)
        assert done.returncode == 4, (args, done.stderr)  # authentication
        assert "Permission denied" in done.stderr, done.stderr
    back = cli("hosts", "add", "box", "testhost", "--remote-dir", remote,
                             "--replace", "--no-check")  # fmt: skip
    assert back.returncode == 0
    assert cli("cancel", job, "--grace", "0").returncode == 0
