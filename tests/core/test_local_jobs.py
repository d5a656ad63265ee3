"""Jobs on the local provider, through the real CLI and the real agent."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.conftest import CLI, job_id_of, wait_for_log

NASTY = ["a b", '; rm -rf / $(x) "quotes"', "`id`", "$HOME", "it's", "--not-an-option"]


def test_run_logs_wait_roundtrip_with_literal_args(cli: CLI, project: Path) -> None:
    done = cli("run", "hello.py", "--", *NASTY, "--lines", "3", cwd=project)
    assert done.returncode == 0, done.stderr
    job = job_id_of(done)
    waited = cli("wait", job)
    assert waited.returncode == 0, waited.stderr
    log = cli("logs", job).stdout.splitlines()
    assert log[: len(NASTY)] == [f"arg: {a!r}" for a in NASTY]
    assert f"RUNCTL_JOB_ID={job}" in log
    assert log[-3:] == ["line 1", "line 2", "line 3"]


def test_everything_after_the_script_goes_to_the_script(cli: CLI, project: Path) -> None:
    # Like `python train.py --epochs 2`: option parsing stops at SCRIPT.
    done = cli("local", "hello.py", "--lines", "1", "--name", "x", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "arg: '--name'" in done.stdout and "line 1" in done.stdout
    # The `--` spelling still works, and a `--` right after SCRIPT is not passed on.
    ok = cli("local", "hello.py", "--", "--lines", "1", cwd=project)
    assert ok.returncode == 0, ok.stderr
    assert "arg: '--'" not in ok.stdout and "line 1" in ok.stdout
    # runctl's own options go before SCRIPT; a script option there gets a clear hint.
    wrong = cli("local", "--lines", "1", "hello.py", cwd=project)
    assert wrong.returncode == 2
    assert "No such option '--lines'" in wrong.stderr
    assert "hello.py --lines" not in wrong.stderr and "after SCRIPT" in wrong.stderr


def test_a_json_flag_after_the_script_is_the_scripts_even_when_the_run_fails(
    cli: CLI, project: Path
) -> None:
    # `--json` after SCRIPT belongs to the script: a failing submit reports in text, and
    # stdout stays empty; before SCRIPT it is runctl's and the error is one JSON object.
    theirs = cli("run", "--on", "ssh:127.0.0.1:1", "hello.py", "--json", cwd=project)
    assert theirs.returncode == 7 and theirs.stdout == ""
    assert theirs.stderr.startswith("sync:") or "Error: " in theirs.stderr
    ours = cli("run", "--json", "--on", "ssh:127.0.0.1:1", "hello.py", cwd=project)
    assert ours.returncode == 7
    assert json.loads(ours.stdout)["error"]["exit_code"] == 7


def test_wait_propagates_failing_exit_code(cli: CLI, project: Path) -> None:
    job = job_id_of(cli("run", "hello.py", "--", "--exit-code", "7", cwd=project))
    waited = cli("wait", job)
    assert waited.returncode == 7
    assert "failed with exit code 7" in waited.stderr
    status = json.loads(cli("status", job, "--json").stdout)
    assert status["state"] == "failed" and status["exit_code"] == 7


def test_local_foreground_exit_code_and_output(cli: CLI, project: Path) -> None:
    done = cli("local", "hello.py", "--", "--exit-code", "3", "--lines", "2", cwd=project)
    assert done.returncode == 3
    assert "line 2" in done.stdout


def test_cancel_sigterm_then_state_cancelled(cli: CLI, project: Path) -> None:
    (project / "sleepy.py").write_text(
        "import signal, sys, time\n"
        "def bye(*a):\n    print('got SIGTERM', flush=True); sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    job = job_id_of(cli("run", "sleepy.py", cwd=project))
    wait_for_log(cli, job, "ready")
    started = time.monotonic()
    done = cli("cancel", job, "--grace", "5", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "cancelled"
    assert time.monotonic() - started < 5
    assert "got SIGTERM" in cli("logs", job).stdout
    assert cli("wait", job).returncode == 143


def test_cancel_escalates_to_sigkill_after_grace(cli: CLI, project: Path) -> None:
    (project / "stubborn.py").write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    job = job_id_of(cli("run", "stubborn.py", cwd=project))
    wait_for_log(cli, job, "ready")
    started = time.monotonic()
    done = cli("cancel", job, "--grace", "1", "--json")
    elapsed = time.monotonic() - started
    assert json.loads(done.stdout)["state"] == "cancelled"
    assert 0.9 < elapsed < 10
    assert json.loads(done.stdout)["exit_code"] == 128 + signal.SIGKILL


def test_job_survives_cli_exit_and_agent_heartbeat(cli: CLI, project: Path) -> None:
    job = job_id_of(cli("run", "hello.py", "--", "--lines", "5", "--interval", "0.2", cwd=project))
    status = json.loads(cli("status", job, "--json").stdout)
    assert status["state"] in ("running", "setup", "succeeded")
    assert cli("wait", job).returncode == 0


def test_lost_agent_is_reported_not_success(cli: CLI, project: Path) -> None:
    (project / "long.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    job = job_id_of(cli("run", "long.py", cwd=project))
    wait_for_log(cli, job, "ready")
    info = json.loads(cli("status", job, "--json").stdout)
    state = json.loads(Path(info["job_dir"], "state.json").read_text())
    pid = int(Path(info["job_dir"], "pid").read_text())
    os.kill(state["agent_pid"], signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.3)
    waited = cli("wait", job)
    assert waited.returncode != 0
    assert json.loads(cli("status", job, "--json").stdout)["state"] == "lost"


def test_logs_tail_and_follow(cli: CLI, project: Path) -> None:
    job = job_id_of(
        cli("run", "hello.py", "--", "--lines", "10", "--interval", "0.05", cwd=project)
    )
    followed = cli("logs", job, "--follow")
    assert followed.returncode == 0
    assert followed.stdout.splitlines()[-1] == "line 10"
    tail = cli("logs", job, "--tail", "2").stdout.splitlines()
    assert tail == ["line 9", "line 10"]


def test_get_refuses_path_traversal(cli: CLI, project: Path, tmp_path: Path) -> None:
    job = job_id_of(cli("run", "hello.py", cwd=project))
    cli("wait", job)
    for bad in ("../../../etc/passwd", "/etc/passwd", "outputs/../../x"):
        done = cli("get", job, bad, str(tmp_path / "x"))
        assert done.returncode == 2, bad
        assert "refusing" in done.stderr
        assert not (tmp_path / "x").exists()
    info = json.loads(cli("status", job, "--json").stdout)
    os.symlink("/etc", Path(info["job_dir"]) / "escape")
    done = cli("get", job, "escape/hostname", str(tmp_path / "y"))
    assert done.returncode == 2 and "outside" in done.stderr
    ok = cli("get", job, "log", str(tmp_path / "log.txt"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "log.txt").read_text() == f"RUNCTL_JOB_ID={job}\n"


def test_exclusive_refuses_second_job_of_project(cli: CLI, project: Path) -> None:
    (project / "long.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(30)\n")
    first = job_id_of(cli("run", "--exclusive", "long.py", cwd=project))
    wait_for_log(cli, first, "ready")
    second = cli("run", "--exclusive", "hello.py", cwd=project)
    assert second.returncode == 9
    assert first in second.stderr
    third = cli("run", "hello.py", cwd=project)  # without --exclusive several jobs may run
    assert third.returncode == 0
    cli("cancel", first, "--grace", "1")


def test_jobs_filters(cli: CLI, project: Path) -> None:
    ok = job_id_of(cli("run", "hello.py", cwd=project))
    bad = job_id_of(cli("run", "hello.py", "--", "--exit-code", "1", cwd=project))
    cli("wait", ok)
    cli("wait", bad)
    failed = json.loads(cli("jobs", "--state", "failed", "--json").stdout)
    assert [j["job_id"] for j in failed] == [bad]
    everything = json.loads(cli("jobs", "--on", "local", "--json").stdout)
    assert {j["job_id"] for j in everything} == {ok, bad}
