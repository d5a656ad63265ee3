"""Spot recovery end to end: moto EC2 + netns hosts + a real torch job + S3 checkpoints.

``Chaos`` (conftest) plays AWS: notices, reclaimed and vanished machines. The controller under
test is the real CLI: ``workflow train --recover`` in the foreground, ``recover --daemon``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI
from tests.providers.aws.conftest import MotoAWS
from tests.recover.conftest import Chaos, SpotStand, events, steps_of, write_config, write_train

pytestmark = [
    pytest.mark.integration,
    pytest.mark.netns,
    pytest.mark.slow,
    # SeaweedFS listens on rhost31's veth peer, where the hosts reach it.
    pytest.mark.allow_hosts(["127.0.0.1", "localhost", "::1", "10.213.31.1"]),
]
EVERY = 10  # steps between checkpoints: the most an interruption may lose
INTERRUPTIONS = int(os.environ.get("SPOT_N", "20"))
CREDS = ["--env", "AWS_ACCESS_KEY_ID=testing", "--env", "AWS_SECRET_ACCESS_KEY=testing"]


@pytest.fixture
def spot_aws(aws_ssh: MotoAWS, spot_stand: SpotStand) -> MotoAWS:
    """moto + the netns hosts, with every poll short: spot notices, watchdog, controller."""
    write_config(
        aws_ssh,
        aws={"spot_poll_s": 0.5, "wait_timeout_s": 60.0},
        s3={"endpoint_url": spot_stand.seaweed.endpoint_url},
        watchdog={"check_s": 0.5},
        jobs={"grace_s": 2.0},
        ssh={"control_persist_s": 10},
    )
    return aws_ssh


@pytest.fixture
def done_dir() -> Iterator[Path]:
    """A directory the test user on the hosts can read (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="runctl-spot-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _remote_dir(aws: MotoAWS) -> str:
    import tomllib

    return str(tomllib.loads(aws.config_file.read_text())["aws"]["remote_dir"])


def _chaos(aws: MotoAWS, stand: SpotStand, done: Path, interruptions: int, **kw: Any) -> Chaos:
    chaos = Chaos(aws, [h.address for h in stand.hosts], stand=stand,
                  remote_dir=_remote_dir(aws), interruptions=interruptions,
                  done_file=done / "done", **kw)  # fmt: skip
    chaos.start()
    return chaos


def _workflow(cli: CLI, project: Path, bucket: str, *extra: str, sync_s: str = "0") -> Any:
    write_train(project)
    return cli("workflow", "train", "--on", "aws", "--instance-type", "t3.micro", "--spot",
               "--recover", "--poll", "0.5", "--json", "--no-install-deps",
               "--checkpoint-s3", f"s3://{bucket}/run", "--checkpoint-sync-s", sync_s, *CREDS,
               *extra, cwd=project, timeout=600)  # fmt: skip


def _alive(aws: MotoAWS) -> list[str]:
    found = aws.client("ec2").describe_instances(Filters=[
        {"Name": "tag:runctl:managed", "Values": ["true"]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ])  # fmt: skip
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def _check_resumes(logs: list[str], final_log: str) -> list[int]:
    """Every attempt after an interruption resumed from the newest checkpoint the one before
    wrote, losing at most one checkpoint interval; returns the steps lost per interruption."""
    lost = []
    for before, after in zip(logs, [*logs[1:], final_log], strict=True):
        prev, nxt = steps_of(before), steps_of(after)
        assert prev["saved"], before
        assert nxt["resumed"] is not None, after
        # newest checkpoint: the last one logged (or one saved as SIGTERM cut the log short)
        assert prev["saved"][-1] <= nxt["resumed"] <= prev["saved"][-1] + EVERY, (
            before[-400:],
            after[:400],
        )
        assert prev["last"] - nxt["resumed"] <= EVERY, (before[-300:], after[:300])
        lost.append(prev["last"] - nxt["resumed"])
    return lost


def _never_two_at_once(home: Path) -> None:
    """From the recorded state history: no two runctl machines were ever billed together."""
    from runctl.state.store import Store

    store = Store.open(home / "state.db")
    spans = []
    for record in store.list_instance_records("aws"):
        history = store.instance_history(int(record["resource_id"]))
        start = next(at for state, at in history if state in ("pending", "running"))
        end = next((at for state, at in history if state == "terminated"), "9999")
        spans.append((start, end))
    spans.sort()
    for (_s1, e1), (s2, _e2) in zip(spans, spans[1:], strict=False):
        assert e1 <= s2, spans


@pytest.mark.timeout(600)  # ~10-15 s a cycle (torch start, two AWS CLI copies), x 21
def test_twenty_spot_interruptions_recover_from_the_latest_checkpoint(
    cli: CLI, spot_aws: MotoAWS, spot_stand: SpotStand, project: Path, runctl_home: Path,
    done_dir: Path, tmp_path: Path,
) -> None:  # fmt: skip
    from tests.stands.seaweed import new_bucket

    bucket = new_bucket(spot_stand.seaweed, "spot")
    chaos = _chaos(spot_aws, spot_stand, done_dir, INTERRUPTIONS)
    started = time.monotonic()
    try:
        done = _workflow(cli, project, bucket, "--max-restarts", "25", "--output",
                         str(tmp_path / "out"), "train_spot", "--", "--every", str(EVERY),
                         "--step-s", "0.05", "--done-file", str(done_dir / "done"))  # fmt: skip
    finally:
        chaos.stop()
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    seen = [(e["kind"], e["data"].get("reason") or e["data"].get("error")) for e in
            events(runctl_home, "recover.") if e["kind"] != "recover.ready"]  # fmt: skip
    assert summary["state"] == "succeeded" and summary["restarts"] == INTERRUPTIONS, (
        summary,
        seen,
    )
    assert len(chaos.logs) == INTERRUPTIONS and len(summary["jobs"]) == INTERRUPTIONS + 1
    final_log = _final_log(cli, summary["job_id"])
    lost = _check_resumes(chaos.logs, final_log)
    assert max(lost) <= EVERY
    # zero leaked machines: every one of the 21 terminated, and never two at once
    assert _alive(spot_aws) == [] and chaos.max_alive == 1
    assert len(summary["instances"]) == INTERRUPTIONS + 1, (summary["instances"], seen)
    assert all(m["state"] == "terminated" for m in summary["instances"]), summary["instances"]
    _never_two_at_once(runctl_home)
    kinds = [e["kind"] for e in events(runctl_home, "recover.")]
    assert kinds.count("recover.interrupted") == INTERRUPTIONS
    assert kinds.count("recover.resubmitted") == INTERRUPTIONS
    reasons = {e["data"]["reason"] for e in events(runctl_home, "recover.interrupted")}
    assert reasons == {"preempted"}, seen
    steps = json.loads((tmp_path / "out" / "metrics.json").read_text())["steps"]
    assert steps >= steps_of(final_log)["resumed"]
    print(f"\n{INTERRUPTIONS} interruptions in {took:.1f}s; lost steps {lost}; cycles "
          f"{[round(t, 1) for t in chaos.cycle_times]}")  # fmt: skip


def _final_log(cli: CLI, job_id: str) -> str:
    done = cli("logs", job_id)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_max_restarts_exhausted_gives_up_and_terminates(
    cli: CLI, spot_aws: MotoAWS, spot_stand: SpotStand, project: Path, runctl_home: Path,
    done_dir: Path,
) -> None:  # fmt: skip
    from tests.stands.seaweed import new_bucket

    bucket = new_bucket(spot_stand.seaweed, "giveup")
    chaos = _chaos(spot_aws, spot_stand, done_dir, 2)
    try:
        done = _workflow(cli, project, bucket, "--max-restarts", "1", "train_spot", "--",
                         "--every", "5", "--step-s", "0.02",
                         "--done-file", str(done_dir / "done"))  # fmt: skip
    finally:
        chaos.stop()
    assert done.returncode == 143, done.stderr[-3000:]  # the preempted job's SIGTERM status
    assert "no restarts left" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["result"] == "gave-up" and summary["restarts"] == 1
    assert summary["state"] == "preempted" and summary["interruption"] == "preempted"
    assert len(summary["instances"]) == 2
    assert all(m["state"] == "terminated" for m in summary["instances"])
    assert _alive(spot_aws) == [] and chaos.max_alive == 1
    kinds = [e["kind"] for e in events(runctl_home, "recover.")]
    assert kinds.count("recover.resubmitted") == 1 and kinds[-1] == "recover.gave_up"


def test_run_recover_daemon_resumes_a_vanished_machine_from_the_store(
    cli: CLI, spot_aws: MotoAWS, spot_stand: SpotStand, project: Path, runctl_home: Path,
    done_dir: Path,
) -> None:  # fmt: skip
    """`run --recover` on a spot machine starts `recover --daemon`; a second controller is
    refused. The machine vanishes (no notice): only what the periodic copy stored survives."""
    from tests.stands.seaweed import new_bucket

    bucket = new_bucket(spot_stand.seaweed, "daemon")
    write_train(project)
    chaos = _chaos(spot_aws, spot_stand, done_dir, 1, mode="vanish")
    daemon_pid = None
    try:
        created = cli("aws", "create", "t3.micro", "--spot", "--json")
        assert created.returncode == 0, created.stderr
        iid = json.loads(created.stdout)["instance_id"]
        _wait_for(lambda: iid in chaos.mapped)
        started = cli("run", "--on", f"aws:{iid}", "--recover", "--max-restarts", "2",
                      "--json", "--no-install-deps", "--checkpoint-s3", f"s3://{bucket}/run",
                      "--checkpoint-sync-s", "0.3", *CREDS, "train_spot", "--", "--every", "5",
                      "--step-s", "0.03", "--done-file", str(done_dir / "done"),
                      cwd=project)  # fmt: skip
        assert started.returncode == 0, started.stderr
        data = json.loads(started.stdout)
        job, daemon_pid = data["job_id"], data["recover"]["pid"]
        for second in (cli("recover", job, "--daemon", cwd=project), cli("recover", job)):
            assert second.returncode == 9 and "already managed" in second.stderr
        _wait_for(lambda: not Path(f"/proc/{daemon_pid}").exists(), timeout=120)
    finally:
        chaos.stop()
        if daemon_pid and Path(f"/proc/{daemon_pid}").exists():
            os.kill(daemon_pid, 9)
    log = Path(data["recover"]["log"]).read_text()
    assert "restarted as train-spot-" in log, log
    jobs = json.loads(cli("jobs", "--json", "--no-refresh").stdout)
    assert [j["state"] for j in jobs] == ["succeeded", "lost"]  # the first vanished under it
    assert jobs[0]["on"] != jobs[1]["on"]
    [interrupted] = events(runctl_home, "recover.interrupted")
    assert interrupted["data"]["reason"] == "vanished"
    before, after = steps_of(chaos.logs[0]), steps_of(_final_log(cli, jobs[0]["job_id"]))
    assert after["resumed"] is not None and after["resumed"] >= max(before["uploaded"])
    assert after["resumed"] in before["saved"]
    # the daemon leaves the job's final machine to its owner, as it found the first one
    alive = _alive(spot_aws)
    assert alive == [jobs[0]["on"].removeprefix("aws:")] and chaos.max_alive == 1
    kinds = [e["kind"] for e in events(runctl_home, "recover.")]
    for kind in ("recover.enabled", "recover.daemon", "recover.started", "recover.interrupted",
                 "recover.terminated", "recover.launched", "recover.ready",
                 "recover.watchdog_armed", "recover.resubmitted", "recover.finished"):  # fmt: skip
        assert kind in kinds, kinds
    spot_aws.client("ec2").terminate_instances(InstanceIds=alive)


def _wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
