"""The host watchdog on the local provider: real jobs, the real agent daemon, the real CLI.

Policies (max-duration, idle with and without a GPU threshold, lost controller) fire a
recipe that records the jobs' states, so the test sees the jobs were cancelled before it ran.
Spot notices come from the fake IMDSv2 server; the checkpoint store is a real S3 (SeaweedFS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runctl.core.agent import local_agent_file
from tests.conftest import CLI, job_id_of, need, wait_for_log
from tests.fakes.fixtures import write_user_config
from tests.fakes.imds import FakeImds

HOST_CLI = Path("/opt/runctl-test-awscli/bin/aws")
SLEEPER = """
import signal, sys, time
def bye(*a):
    print("got SIGTERM", flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(120)
"""
# Writes the state of every job on the host to the marker: the recipe runs after the cancels.
RECORDER = """#!/bin/sh
{ echo fired; cat "$1"/jobs/*/state.json 2>/dev/null; echo; } > "$2.tmp" && mv "$2.tmp" "$2"
"""


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def base(runctl_home: Path) -> Iterator[Path]:
    """The local agent's base dir; its watchdog daemon is stopped after the test."""
    path = runctl_home / "local"
    yield path
    if (path / "watchdog.json").exists():
        subprocess.run([sys.executable, str(local_agent_file()), "watchdog", "disarm", "--base",
                        str(path)], capture_output=True, timeout=30, check=False)  # fmt: skip


@pytest.fixture
def marker(tmp_path: Path, base: Path) -> Path:
    """Config: fast checks, and a shutdown command that records the jobs in ``marker``."""
    recorder = tmp_path / "record.sh"
    recorder.write_text(RECORDER)
    path = tmp_path / "marker"
    write_user_config(tmp_path, "[watchdog]\ncheck_s = 0.2\n"
                      f'shutdown_command = "sh {recorder} {base} {path}"\n')  # fmt: skip
    return path


def _arm(cli: CLI, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = cli("watchdog", "arm", "--on", "local", *args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _status(cli: CLI) -> dict[str, Any]:
    done = cli("watchdog", "status", "--on", "local", "--json")
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _job_state(cli: CLI, job: str) -> str:
    return str(json.loads(cli("status", job, "--json").stdout)["state"])


def _sleeper(cli: CLI, project: Path) -> str:
    (project / "sleeper.py").write_text(SLEEPER)
    job = job_id_of(cli("run", "sleeper.py", cwd=project))
    wait_for_log(cli, job, "ready")
    return job


def _fired_after_cancel(cli: CLI, marker: Path, job: str | None, reason: str) -> None:
    """The recipe ran once the jobs had ended; the watchdog recorded why, then exited."""
    text = _until(lambda: marker.exists() and marker.read_text(), 15, "the recipe")
    assert text.startswith("fired")
    if job is not None:
        assert '"state": "cancelled"' in text, text
        assert _job_state(cli, job) == "cancelled"
        assert f"[runctl] watchdog: {reason}: stopping the job" in cli("logs", job).stdout
    status = _until(lambda: (s := _status(cli))["fired"] and not s["alive"] and s, 10,
                    "the watchdog to finish")  # fmt: skip
    assert status["fired"]["reason"] == reason and status["fired"]["action"] == "stop"
    assert status["fired"]["recipe_done_at"]


def test_max_duration_cancels_jobs_then_runs_the_recipe(
    cli: CLI, project: Path, marker: Path, base: Path
) -> None:
    job = _sleeper(cli, project)
    armed = _arm(cli, "--max-duration", "1", "--watchdog-action", "stop")
    cfg = armed["config"]
    assert armed["armed"] and armed["pid"] and cfg["action"] == "stop"
    assert cfg["recipe"]["argv"][-1] == str(marker) and cfg["deadline_at"] > cfg["armed_at"]
    _fired_after_cancel(cli, marker, job, "max-duration")
    cancel = json.loads((base / "jobs" / job / "cancel.json").read_text())
    assert cancel["reason"] == "watchdog: max-duration" and cancel["grace_s"] == 10.0
    assert "max-duration policy fired" in (base / "watchdog.log").read_text()


def test_idle_without_jobs_fires(cli: CLI, marker: Path) -> None:
    _arm(cli, "--idle-timeout", "1", "--watchdog-action", "stop")
    _fired_after_cancel(cli, marker, None, "idle")
    assert marker.read_text() == "fired\n\n"  # no job was there to cancel


def test_idle_gpu_threshold_with_fake_nvidia_smi(
    cli: CLI, project: Path, marker: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    readings = tmp_path / "gpu-util.csv"
    readings.write_text("95\n3\n")  # one GPU busy: not idle though another idles
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\n[ "$1" = "--query-gpu=utilization.gpu" ] && cat "{readings}"\n')
    smi.chmod(0o755)
    job = _sleeper(cli, project)
    path = f"{bin_dir}:{os.environ['PATH']}"
    _arm(cli, "--idle-timeout", "1", "--idle-gpu-util", "10", "--watchdog-action", "stop",
         env={"PATH": path})  # fmt: skip
    time.sleep(1.8)  # over the timeout, but a GPU is busy
    status = _status(cli)
    assert status["fired"] is None and status["alive"] and status["last_check_at"]
    assert _job_state(cli, job) == "running"
    readings.write_text("3\n7\n")  # every GPU below 10%: idle although the job runs
    _fired_after_cancel(cli, marker, job, "idle")


def test_lost_controller_fires_only_without_contact(cli: CLI, project: Path, marker: Path) -> None:
    job = _sleeper(cli, project)
    # 5 s: a `runctl status` can take a second or two on a loaded two-core machine.
    _arm(cli, "--lost-controller-timeout", "5", "--watchdog-action", "stop")
    until = time.monotonic() + 6
    while time.monotonic() < until:  # `runctl status` is contact: it keeps the host alive
        assert _job_state(cli, job) == "running"
        time.sleep(0.3)
    assert not marker.exists()
    _fired_after_cancel(cli, marker, job, "lost-controller")


def test_local_actions_none_and_refusals(
    cli: CLI, project: Path, tmp_path: Path, base: Path
) -> None:
    write_user_config(tmp_path, "[watchdog]\ncheck_s = 0.2\n")
    refused = cli("watchdog", "arm", "--on", "local", "--max-duration", "1",
                  "--watchdog-action", "terminate")  # fmt: skip
    assert refused.returncode == 6 and "not runctl's to delete" in refused.stderr
    no_command = cli("watchdog", "arm", "--on", "local", "--max-duration", "1",
                     "--watchdog-action", "stop")  # fmt: skip
    assert no_command.returncode == 6 and "watchdog.shutdown_command" in no_command.stderr
    empty = cli("watchdog", "arm", "--on", "local")
    assert empty.returncode == 2 and "nothing for the watchdog to watch" in empty.stderr
    assert not (base / "watchdog.json").exists()

    job = _sleeper(cli, project)
    armed = _arm(cli, "--max-duration", "1")  # local default: cancel the jobs only
    assert armed["config"]["action"] == "none" and armed["config"]["recipe"] is None
    _until(lambda: _job_state(cli, job) == "cancelled", 15, "the job to be cancelled")
    status = _status(cli)
    assert status["fired"]["reason"] == "max-duration" and status["alive"]
    human = cli("watchdog", "status", "--on", "local")
    assert "fired:" in human.stdout and "reason max-duration" in human.stdout
    disarmed = cli("watchdog", "disarm", "--on", "local", "--json")
    assert json.loads(disarmed.stdout)["stopped"] is True
    assert _status(cli)["alive"] is False


def test_run_arms_the_policy_and_refuses_an_impossible_one_before_starting(
    cli: CLI, project: Path, tmp_path: Path, base: Path
) -> None:
    """`run --max-duration` arms the host; an action the host cannot do starts nothing."""
    write_user_config(tmp_path, "[watchdog]\ncheck_s = 0.2\n")
    (project / "sleeper.py").write_text(SLEEPER)
    refused = cli("run", "--max-duration", "1", "--watchdog-action", "terminate",
                  "sleeper.py", cwd=project)  # fmt: skip
    assert refused.returncode == 6 and "not runctl's to delete" in refused.stderr
    assert json.loads(cli("jobs", "--json").stdout) == []  # refused before anything started
    started = cli("run", "--max-duration", "1", "sleeper.py", cwd=project)
    assert started.returncode == 0 and "watchdog armed on" in started.stderr
    job = job_id_of(started)
    _until(lambda: _job_state(cli, job) == "cancelled", 15, "the watchdog to cancel the job")
    assert _status(cli)["fired"]["reason"] == "max-duration"


# ---------------------------------------------------------------------------- spot notices

TRAINER = """
import os, pathlib, signal, sys, time
d = pathlib.Path(os.environ["RUNCTL_CHECKPOINT_DIR"])
def final(*a):
    print("got SIGTERM; saving", flush=True)
    time.sleep(1.0)  # a slow save: the grace period must cover it
    (d / "step_002.pt").write_bytes(b"final")
    print("saved final checkpoint", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, final)
(d / "step_001.pt").write_bytes(b"first")
print("wrote step_001", flush=True)
while True:
    time.sleep(0.1)
"""


def _store_keys(seaweed: Any, bucket: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    found = s3.list_objects_v2(Bucket=bucket, Prefix="run/").get("Contents", [])
    return sorted(o["Key"].rsplit("/", 1)[-1] for o in found)


@pytest.mark.integration
def test_spot_notice_preempts_with_grace_and_final_sync(
    cli: CLI, project: Path, base: Path, seaweed: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    need(None if HOST_CLI.exists() else f"no AWS CLI at {HOST_CLI} (scripts/install-test-deps.sh)")
    from tests.stands.seaweed import new_bucket

    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)
    write_user_config(tmp_path, f'[aws]\nhost_cli = "{HOST_CLI}"\nspot_poll_s = 0.2\n'
                      f'[s3]\nendpoint_url = "{seaweed.endpoint_url}"\n'
                      "[watchdog]\ncheck_s = 0.2\n")  # fmt: skip
    bucket = new_bucket(seaweed, "spot")
    imds = FakeImds().start()
    try:
        (project / "trainer.py").write_text(TRAINER)
        job = job_id_of(cli("run", "--checkpoint-s3", f"s3://{bucket}/run", "--checkpoint-sync-s",
                            "0", "trainer.py", cwd=project))  # fmt: skip
        wait_for_log(cli, job, "wrote step_001")
        armed = _arm(cli, "--spot-url", imds.url)
        assert armed["config"]["spot"] == {"url": imds.url, "poll_s": 0.2}

        # Rebalance: an immediate upload, although the store syncs only at exit (0 s).
        imds.set_rebalance()
        _until(lambda: "step_001.pt" in _store_keys(seaweed, bucket), 20, "the rebalance upload")
        assert json.loads((base / "rebalance.json").read_text())["time"]
        assert _job_state(cli, job) == "running"

        imds.set_instance_action("terminate", in_s=120)
        _until(lambda: _job_state(cli, job) == "preempted", 30, "the job to be preempted")
    finally:
        imds.stop()
    log = cli("logs", job).stdout
    assert "[runctl] spot interruption notice (terminate at " in log
    assert "saved final checkpoint" in log  # the 1 s save finished inside the grace period
    assert _store_keys(seaweed, bucket) == ["step_001.pt", "step_002.pt"]  # final sync
    host = json.loads((base / "jobs" / job / "state.json").read_text())
    assert host["state"] == "preempted" and host["preempted_reason"] == "spot interruption notice"
    assert host["checkpoints_uploaded_at"]
    preempt = json.loads((base / "jobs" / job / "preempt.json").read_text())
    assert preempt["action"] == "terminate" and preempt["grace_s"] == 10.0
    status = _status(cli)
    assert status["spot_notice"]["action"] == "terminate" and status["fired"] is None
    assert imds.statuses("/latest/api/token") == [200]  # one IMDSv2 token for every poll
