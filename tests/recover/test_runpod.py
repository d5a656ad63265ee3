"""Workflow and recovery on a cloud without tags or notices: the fake RunPod API, pods mapped
to the loopback sshd. A pod that disappears is replaced and the job resumes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI
from tests.fakes.fixtures import on_sshd
from tests.fakes.runpod_server import FakeRunpod
from tests.recover.conftest import events

pytestmark = pytest.mark.integration
GPU = "NVIDIA GeForce RTX 4090"

# Checkpoints are plain files here: the step number in ckpt_step_N.pt.
RESUMABLE = """import os, pathlib, sys, time
ckpts = pathlib.Path(os.environ["RUNCTL_CHECKPOINT_DIR"])
ckpts.mkdir(parents=True, exist_ok=True)
resume = os.environ.get("RUNCTL_RESUME_FROM")
step = int(pathlib.Path(resume).read_text()) if resume else 0
print(f"resumed from step {step}" if resume else "fresh start", flush=True)
while step < int(sys.argv[1]):
    step += 1
    (ckpts / f"ckpt_step_{step:06d}.pt").write_text(str(step))
    print(f"step {step}", flush=True)
    time.sleep(float(sys.argv[2]))
out = pathlib.Path(os.environ["RUNCTL_OUTPUT_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text(str(step))
"""


@pytest.fixture
def pods(runpod_fake: FakeRunpod, sshd: Any, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> tuple[FakeRunpod, Path]:  # fmt: skip
    """Pods reachable at the sshd stand; returns the fake and runctl's dir on the "pods"."""
    import pwd

    base = on_sshd(runpod_fake, sshd, tmp_path, monkeypatch, "rp-wf",
                   "wait_timeout_s = 30.0\n[ssh]\ncontrol_persist_s = 5\n")  # fmt: skip
    return runpod_fake, Path(pwd.getpwnam(sshd.user).pw_dir) / base


def _lose_pod(fake: FakeRunpod, base: Path, *, sold_out: bool = False) -> str:
    """Once the job has made progress, the pod disappears and its processes with it (and,
    with ``sold_out``, RunPod has no such GPU left for a while)."""
    deadline = time.monotonic() + 60
    while True:
        logs = list((base / "jobs").glob("*/log"))
        if logs and "step 4\n" in logs[0].read_text():
            break
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    [pod_id] = list(fake.pods)
    if sold_out:
        fake.no_capacity.add(GPU)
    del fake.pods[pod_id]
    job_dir = logs[0].parent
    state = json.loads((job_dir / "state.json").read_text())
    os.killpg(int((job_dir / "pid").read_text()), signal.SIGKILL)
    os.kill(int(state["agent_pid"]), signal.SIGKILL)
    return pod_id


def test_vanished_pod_is_replaced_and_the_job_resumes(
    cli: CLI, pods: tuple[FakeRunpod, Path], project: Path, runctl_home: Path
) -> None:
    fake, base = pods
    (project / "resumable.py").write_text(RESUMABLE)
    proc = cli.popen("workflow", "train", "--on", "runpod", "--gpu-type", GPU, "--recover",
                     "--max-restarts", "2", "--poll", "0.3", "--json", "--no-install-deps",
                     "resumable.py", "--", "30", "0.05", cwd=project)  # fmt: skip
    try:
        lost = _lose_pod(fake, base)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["state"] == "succeeded" and summary["restarts"] == 1
    ids = [m["id"] for m in summary["instances"]]
    assert ids[0] == f"runpod:{lost}" and len(ids) == 2
    assert all(m["state"] == "terminated" for m in summary["instances"])
    assert fake.pods == {}  # the replacement was terminated at the end: nothing left
    assert summary["instances"][1]["hourly_usd"] == 0.44  # the 4090's price at launch
    # the log of both attempts streamed to stderr; the second resumed past step 4
    resumed = int(err.split("resumed from step ")[1].split()[0])
    assert 4 <= resumed < 30 and "step 30\n" in err
    [interrupted] = events(runctl_home, "recover.interrupted")
    assert interrupted["data"]["reason"] == "vanished"
    assert json.loads((Path(summary["outputs"]) / "metrics.json").read_text()) == 30


def test_replacement_launch_retried_when_capacity_returns(
    cli: CLI, pods: tuple[FakeRunpod, Path], project: Path, runctl_home: Path
) -> None:
    """No capacity for the replacement at first: the launch is retried (recover.launch_failed)
    and the job resumes once a pod can be had again."""
    fake, base = pods
    (project / "resumable.py").write_text(RESUMABLE)
    proc = cli.popen("workflow", "train", "--on", "runpod", "--gpu-type", GPU, "--recover",
                     "--poll", "0.2", "--json", "--no-install-deps", "resumable.py", "--",
                     "20", "0.05", cwd=project)  # fmt: skip
    try:
        _lose_pod(fake, base, sold_out=True)
        deadline = time.monotonic() + 60
        while len(fake.seen("POST /v2/pods")) < 2:  # the first replacement try failed
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        fake.no_capacity.clear()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "launch failed (RunPod has no capacity" in err
    summary = json.loads(out)
    assert summary["state"] == "succeeded" and summary["restarts"] == 1
    kinds = [e["kind"] for e in events(runctl_home, "recover.")]
    assert kinds.count("recover.launch_failed") == 1 and kinds.count("recover.launched") == 1
    assert fake.pods == {}
