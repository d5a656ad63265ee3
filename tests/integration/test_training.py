"""Real torch CPU training through runctl: checkpoints written, resumed, and SIGTERM honoured."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, REPO, need

pytestmark = pytest.mark.slow

TRAIN = "examples/train_mnist.py"
FAST = ["--samples", "2000"]


def _torch_reason() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed"
    return None


def test_local_training_checkpoints_and_resumes(cli: CLI) -> None:
    need(_torch_reason())
    first = cli("local", "--name", "mnist-test", TRAIN, "--", "--epochs", "2", *FAST, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "epoch 2/2" in first.stdout and "done: epochs=2" in first.stdout
    second = cli("run", "--name", "mnist-test", "--follow", TRAIN, "--", "--epochs", "3", *FAST,
                 timeout=300)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "at epoch 2" in second.stdout and "epoch 3/3" in second.stdout
    assert "epoch 1/3" not in second.stdout
    jobs = json.loads(cli("jobs", "--json").stdout)
    status = json.loads(cli("status", jobs[0]["job_id"], "--json").stdout)
    names = [Path(c["path"]).name for c in status["checkpoints"]]
    assert names[-1] == "ckpt_epoch_0003.pt"
    assert status["resume_from"].endswith("ckpt_epoch_0002.pt")


def test_cancelled_training_saves_and_next_run_resumes(cli: CLI) -> None:
    need(_torch_reason())
    job = cli("run", "--name", "mnist-cancel", TRAIN, "--", "--epochs", "50",
              "--sleep-per-epoch", "0.5", *FAST).stdout.strip()  # fmt: skip
    deadline = time.monotonic() + 120
    while "saved" not in cli("logs", job).stdout:
        assert time.monotonic() < deadline, cli("logs", job).stdout
        time.sleep(0.3)
    done = cli("cancel", job, "--grace", "20", "--json")
    assert json.loads(done.stdout)["state"] == "cancelled"
    assert "received SIGTERM, checkpoint saved" in cli("logs", job).stdout
    assert cli("wait", job).returncode == 143
    resumed = cli("local", "--name", "mnist-cancel", TRAIN, "--", "--epochs", "1", *FAST,
                  timeout=300)  # fmt: skip
    assert "resumed from" in resumed.stdout


@pytest.mark.integration
def test_remote_training_on_ssh_host(
    cli: CLI, ssh_config: Path, sshd: object, project: Path
) -> None:
    python = os.environ.get("RUNCTL_TEST_TORCH_PYTHON", "/opt/runctl-test-torch/bin/python")
    need(None if Path(python).exists() else f"no torch interpreter for the ssh user at {python}")
    added = cli("hosts", "add", "torchhost", "testhost", "--python", python,
                "--remote-dir", f".runctl-torch-{time.time_ns()}")  # fmt: skip
    assert added.returncode == 0, added.stderr
    (project / "train_mnist.py").write_text((REPO / TRAIN).read_text())
    first = cli("run", "--on", "torchhost", "--follow", "train_mnist.py", "--", "--epochs", "2",
                *FAST, cwd=project, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "done: epochs=2" in first.stdout
    second = cli("run", "--on", "torchhost", "--follow", "train_mnist.py", "--", "--epochs", "3",
                 *FAST, cwd=project, timeout=300)  # fmt: skip
    assert "at epoch 2" in second.stdout and "epoch 3/3" in second.stdout
    assert "code unchanged" in second.stderr
    job = json.loads(cli("jobs", "--json").stdout)[0]["job_id"]
    got = cli("get", job, "outputs/metrics.json", str(Path(ssh_config).parent / "m.json"))
    assert got.returncode == 0, got.stderr
    assert json.loads((Path(ssh_config).parent / "m.json").read_text())["epochs"] == 3
