"""SIGKILL the CLI at 50 random points during create/train/terminate; reconcile finds every
surviving machine and every job a killed submit left behind, and ``resources cleanup`` leaves
no runctl machine running (checked on the provider side) and no job process on the hosts.

The "hosts" of both clouds are the loopback sshd stand: moto instances through the
``runctl:ssh-endpoint`` tag, fake RunPod pods through their SSH port.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runctl.core.costs import parse_iso
from runctl.models import JobState
from runctl.state.store import Store
from tests.conftest import REPO
from tests.fakes.runpod_server import FakeRunpod
from tests.kills import Trial, kill_batch
from tests.providers.aws.conftest import MotoAWS
from tests.resources.conftest import GPU, ok, user_config

TRIALS = 50
BATCH = 10
# kill points per command; the terminate trials pick aws or runpod at random
PLAN = {"aws-create": 14, "runpod-create": 14, "aws-train": 8, "runpod-train": 8, "terminate": 6}
PLATFORMS = ("--platform", "aws", "--platform", "runpod")
ALIVE = {"pending", "running", "stopping", "stopped"}
SLEEPY = "import time\nprint('ready', flush=True)\ntime.sleep(120)\n"
DRAIN_TIMEOUT_S = 20.0


def _popen(
    *args: str, out: int = subprocess.DEVNULL, cwd: Path = REPO, err: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    # Own process group: after the kill, the test waits for what the CLI had started (ssh,
    # tar) to finish on its own, so the hosts' state is settled before it is compared.
    return subprocess.Popen([sys.executable, "-m", "runctl", *args], cwd=cwd, stdout=out,
                            stderr=err, env=dict(os.environ),
                            start_new_session=True)  # fmt: skip


def _timed(*args: str, cwd: Path = REPO) -> tuple[float, dict[str, Any]]:
    """Run one command to completion: (seconds it took, its JSON answer)."""
    started = time.monotonic()
    proc = _popen("--json", *args, out=subprocess.PIPE, cwd=cwd, err=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (args, err.decode())
    return time.monotonic() - started, json.loads(out)


def _id(data: dict[str, Any]) -> str:
    return str(data.get("instance_id") or data["id"])


def _pids() -> list[str]:
    with os.scandir("/proc") as entries:
        return [e.name for e in entries if e.name.isdigit()]


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies aside)."""
    for pid in _pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _drain(pgids: list[int]) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while any(_group_alive(g) for g in pgids):
        if time.monotonic() > deadline:
            for pgid in pgids:
                if _group_alive(pgid):
                    os.killpg(pgid, signal.SIGKILL)  # a stuck ssh: the host is settled anyway
            return
        time.sleep(0.05)


def _aws_live(aws: MotoAWS) -> set[str]:
    found = aws.client("ec2").describe_instances(
        Filters=[{"Name": "tag:runctl:managed", "Values": ["true"]}]
    )
    return {
        i["InstanceId"]
        for r in found["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] in ALIVE
    }


def _pods_live(pods: FakeRunpod) -> set[str]:
    return {pid for pid, p in pods.pods.items() if p["name"].startswith("runctl-")}


def _host_dirs(tmp_path: Path, sshd: Any) -> list[Path]:
    """The runctl directories of both clouds on the sshd stand (absolute)."""
    home = Path(pwd.getpwnam(sshd.user).pw_dir)
    cfg = tomllib.loads(user_config(tmp_path).read_text())
    return [home / cfg["aws"]["remote_dir"], home / cfg["runpod"]["remote_dir"]]


def _job_processes(dirs: list[Path]) -> list[int]:
    """Processes whose working directory lies in one of ``dirs`` (the jobs' scripts)."""
    found = []
    for pid in _pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if any(cwd.startswith(str(d)) for d in dirs):
            found.append(int(pid))
    return found


@pytest.fixture
def host_dirs(aws_ssh: MotoAWS, sshd: Any, pods_ssh: FakeRunpod, tmp_path: Path) -> Iterator[
    list[Path]
]:  # fmt: skip
    dirs = _host_dirs(tmp_path, sshd)
    yield dirs
    for pid in _job_processes(dirs):  # whatever a failed run left sleeping
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_at_random_points_leaks_nothing(
    cli: object,
    aws_ssh: MotoAWS,
    sshd: Any,
    pods_ssh: FakeRunpod,
    host_dirs: list[Path],
    project: Path,
    runctl_home: Path,
) -> None:
    rng = random.Random(20261123)
    (project / "sleepy.py").write_text(SLEEPY)
    # Calibrate: how long each command takes here once warm (the first create also makes the
    # key pair and security group; the first train syncs the tree and ships the agent);
    # kills are spread over that span.
    first_aws = _id(_timed("aws", "create", "t3.micro")[1])
    aws_s, aws_id = (lambda t: (t[0], _id(t[1])))(_timed("aws", "create", "t3.micro"))
    first_pod = _id(_timed("runpod", "create", "--gpu", GPU, "--no-wait")[1])
    pod_s, pod_id = (lambda t: (t[0], _id(t[1])))(
        _timed("runpod", "create", "--gpu", GPU, "--no-wait")
    )
    term_s = {
        "aws": _timed("aws", "terminate", first_aws, "--force")[0],
        "runpod": _timed("runpod", "terminate", "--pod-id", first_pod, "--force")[0],
    }
    train_aws = _id(_timed("aws", "create", "t3.micro")[1])
    aws_ssh.point_ssh_at(train_aws, sshd)
    train_pod = _id(_timed("runpod", "create", "--gpu", GPU)[1])
    train = {
        "aws": ("aws", "train", train_aws, "--allow-concurrent", "sleepy.py"),
        "runpod": ("runpod", "train", "--pod-id", train_pod, "sleepy.py"),
    }
    train_s, submit_s = {}, {}  # a whole train; from its job record to "running" recorded
    for cloud, argv in train.items():
        _timed(*argv, cwd=project)
        train_s[cloud], data = _timed(*argv, cwd=project)
        submit_s[cloud] = (
            parse_iso(data["started_at"]) - parse_iso(data["created_at"])
        ).total_seconds()

    kinds = [kind for kind, count in PLAN.items() for _ in range(count)]
    assert len(kinds) == TRIALS
    kinds = [rng.choice(["aws-terminate", "runpod-terminate"]) if k == "terminate" else k
             for k in kinds]  # fmt: skip
    rng.shuffle(kinds)
    victims = {"aws": [aws_id], "runpod": [pod_id]}
    # What the terminate trials will terminate, made up front (in parallel) so that the
    # trials themselves start together.
    makers = [
        _popen("aws", "create", "t3.micro", "--json", out=subprocess.PIPE)
        for _ in range(kinds.count("aws-terminate") - 1)
    ] + [
        _popen("runpod", "create", "--gpu", GPU, "--no-wait", "--json", out=subprocess.PIPE)
        for _ in range(kinds.count("runpod-terminate") - 1)
    ]
    for maker in makers:
        out, _ = maker.communicate(timeout=60)
        data = json.loads(out)
        victims["aws" if "instance_id" in data else "runpod"].append(_id(data))
    # Half the train kills land at a random time like the others; the other half a random
    # delay after the job's record appears (found by the submitting pid runctl records), so
    # that some land inside the submit itself, not only in the interpreter's start-up.
    armed = set(rng.sample([i for i, k in enumerate(kinds) if k.endswith("-train")],
                           (PLAN["aws-train"] + PLAN["runpod-train"]) // 2))  # fmt: skip
    killed: dict[str, int] = {}
    finished = 0
    t0 = time.monotonic()
    db = sqlite3.connect(runctl_home / "state.db", timeout=30)
    for start in range(0, TRIALS, BATCH):
        # A changed tree: each host's first train of the batch syncs it before starting the
        # agent, so that kills also land mid-sync (the agent never started: a lost job).
        (project / "stamp.py").write_text(f"BATCH = {start}\n")
        batch: list[Trial] = []
        for i in range(start, min(start + BATCH, TRIALS)):
            kind = kinds[i]
            cloud, verb = kind.split("-")
            if kind == "aws-create":
                proc, limit = _popen("aws", "create", "t3.micro", "--json"), aws_s
            elif kind == "runpod-create":
                proc, limit = _popen("runpod", "create", "--gpu", GPU, "--no-wait"), pod_s
            elif verb == "train":
                proc, limit = _popen("--json", *train[cloud], cwd=project), train_s[cloud]
            else:
                target = victims[cloud].pop()
                flag = [target] if cloud == "aws" else ["--pod-id", target]
                proc, limit = _popen(cloud, "terminate", *flag, "--force"), term_s[cloud]
            # a random point between just after exec and near the usual end
            if i in armed:  # the submit takes a few times longer beside 9 other commands
                batch.append(Trial(proc, kind, rng.uniform(0.0, 4 * submit_s[cloud]), None))
                continue
            at = time.monotonic() + rng.uniform(0.02, 0.9 * limit)
            batch.append(Trial(proc, kind, 0.0, at))
        ended, kills = kill_batch(batch, db)
        finished += ended
        for kind, count in kills.items():
            killed[kind] = killed.get(kind, 0) + count
        _drain([t.proc.pid for t in batch])
    db.close()
    print(
        f"aws create {aws_s:.2f}s, runpod create {pod_s:.2f}s, terminate {term_s}, "
        f"train {train_s}; killed {killed}, {finished} done in {time.monotonic() - t0:.1f}s"
    )
    assert sum(killed.values()) >= TRIALS // 2, (killed, finished)  # most landed mid-command
    assert killed.get("aws-train") and killed.get("runpod-train"), killed

    survivors = {("aws", i) for i in _aws_live(aws_ssh)} | {
        ("runpod", p) for p in _pods_live(pods_ssh)
    }
    assert survivors, "no instance survived: the kills proved nothing"
    store = Store.open(runctl_home / "state.db")
    cut_short = {j.job_id for j in store.list_jobs(states=["submitting"])}
    started = {j for j in cut_short if any((d / "jobs" / j).is_dir() for d in host_dirs)}
    report = ok(cli("reconcile", *PLATFORMS, "--json"))  # type: ignore[operator]
    seen = {
        (f["provider"], f["instance_id"])
        for kind in ("orphans", "known", "drifted")
        for f in report[kind]
    }
    assert survivors <= seen, survivors - seen
    assert not report["skipped"]
    # Every job a kill left "submitting" is found: lost if its agent never started it,
    # recorded as running if it did.
    jobs = {j["job_id"]: j["kind"] for j in report["jobs"]}
    assert jobs == {j: "started" if j in started else "lost" for j in cut_short}, jobs
    assert cut_short, "no kill landed inside a submit"
    store = Store.open(runctl_home / "state.db")
    assert not store.list_jobs(states=["submitting"])
    print(
        f"{len(survivors)} survivors: {len(report['orphans'])} orphans, "
        f"{len(report['known'])} known, {len(report['drifted'])} drifted; "
        f"{len(cut_short)} submits cut short, {len(started)} of them started"
    )

    done = ok(cli("resources", "cleanup", *PLATFORMS, "--yes", "--json"))  # type: ignore[operator]
    assert all(t["result"] == "terminated" for t in done["targets"]), done["targets"]
    assert _aws_live(aws_ssh) == set() and _pods_live(pods_ssh) == set()
    store = Store.open(runctl_home / "state.db")
    active = [j.job_id for j in store.list_jobs(states=["submitting", "setup", "running"])]
    assert not active, active
    assert {j.state for j in store.list_jobs()} <= {JobState.CANCELLED, JobState.LOST,
                                                    JobState.FAILED}  # fmt: skip
    assert not _job_processes(host_dirs)  # cleanup cancelled every job it found running
    print(f"reconcile + cleanup done at {time.monotonic() - t0:.1f}s")
    again = ok(cli("reconcile", *PLATFORMS, "--json"))  # type: ignore[operator]
    assert not again["orphans"] and not again["known"] and not again["drifted"]
    assert not again["jobs"]
