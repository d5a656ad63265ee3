"""SIGKILL the CLI at 50 random points during create/terminate; reconcile finds every survivor
and ``resources cleanup`` leaves no runctl machine running (checked on the provider side)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fakes.runpod_server import FakeRunpod
from tests.providers.aws.conftest import MotoAWS
from tests.resources.conftest import GPU, ok

TRIALS = 50
BATCH = 10
PLATFORMS = ("--platform", "aws", "--platform", "runpod")
ALIVE = {"pending", "running", "stopping", "stopped"}


def _popen(*args: str, out: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runctl", *args],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )


def _timed(*args: str) -> tuple[float, str]:
    """Run one command to completion: (seconds it took, the id it printed)."""
    started = time.monotonic()
    proc = _popen(*args, "--json", out=subprocess.PIPE)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    data = json.loads(out)
    return time.monotonic() - started, str(data.get("instance_id") or data.get("id"))


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


@pytest.mark.slow
def test_sigkill_at_random_points_leaks_nothing(
    cli: object, moto_aws: MotoAWS, pods: FakeRunpod, runctl_home: Path
) -> None:
    rng = random.Random(20261123)
    # Calibrate: how long each command takes here once warm (the first create also makes the
    # key pair and security group); kills are spread over that span.
    _, first_aws = _timed("aws", "create", "t3.micro")
    aws_s, aws_id = _timed("aws", "create", "t3.micro")
    _, first_pod = _timed("runpod", "create", "--gpu", GPU, "--no-wait")
    pod_s, pod_id = _timed("runpod", "create", "--gpu", GPU, "--no-wait")
    term_s = {
        "aws": _timed("aws", "terminate", first_aws, "--force")[0],
        "runpod": _timed("runpod", "terminate", "--pod-id", first_pod, "--force")[0],
    }
    kinds = ["aws-create"] * 20 + ["runpod-create"] * 20
    kinds += [rng.choice(["aws-terminate", "runpod-terminate"]) for _ in range(10)]
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
        victims["aws" if "instance_id" in data else "runpod"].append(
            str(data.get("instance_id") or data["id"])
        )
    killed = finished = 0
    t0 = time.monotonic()
    for start in range(0, TRIALS, BATCH):
        batch: list[tuple[subprocess.Popen[bytes], float]] = []
        for kind in kinds[start : start + BATCH]:
            if kind == "aws-create":
                proc, limit = _popen("aws", "create", "t3.micro", "--json"), aws_s
            elif kind == "runpod-create":
                proc, limit = _popen("runpod", "create", "--gpu", GPU, "--no-wait"), pod_s
            else:
                cloud = kind.split("-")[0]
                target = victims[cloud].pop()
                flag = [target] if cloud == "aws" else ["--pod-id", target]
                proc = _popen(cloud, "terminate", *flag, "--force")
                limit = term_s[cloud]
            # a random point between just after exec and near the usual end
            batch.append((proc, time.monotonic() + rng.uniform(0.02, 0.9 * limit)))
        for proc, at in sorted(batch, key=lambda b: b[1]):
            time.sleep(max(0.0, at - time.monotonic()))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            else:
                finished += 1
            proc.wait(timeout=30)
    print(
        f"aws create {aws_s:.2f}s, runpod create {pod_s:.2f}s, terminate {term_s}; "
        f"{killed} killed, {finished} done in {time.monotonic() - t0:.1f}s"
    )
    assert killed >= TRIALS // 2, (killed, finished)  # most kills landed mid-command

    survivors = {("aws", i) for i in _aws_live(moto_aws)} | {
        ("runpod", p) for p in _pods_live(pods)
    }
    assert survivors, "no instance survived: the kills proved nothing"
    report = ok(cli("reconcile", *PLATFORMS, "--json"))  # type: ignore[operator]
    seen = {
        (f["provider"], f["instance_id"])
        for kind in ("orphans", "known", "drifted")
        for f in report[kind]
    }
    assert survivors <= seen, survivors - seen
    print(
        f"{len(survivors)} survivors: {len(report['orphans'])} orphans, "
        f"{len(report['known'])} known, {len(report['drifted'])} drifted"
    )
    assert not report["skipped"]

    done = ok(cli("resources", "cleanup", *PLATFORMS, "--yes", "--json"))  # type: ignore[operator]
    assert all(t["result"] == "terminated" for t in done["targets"]), done["targets"]
    assert _aws_live(moto_aws) == set() and _pods_live(pods) == set()
    print(f"reconcile + cleanup done at {time.monotonic() - t0:.1f}s")
    again = ok(cli("reconcile", *PLATFORMS, "--json"))  # type: ignore[operator]
    assert not again["orphans"] and not again["known"] and not again["drifted"]
