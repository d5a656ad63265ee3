"""A job crashed while writing its newest checkpoint: the next run resumes from the one before.

The newest checkpoint is left as a crash mid-write leaves it (a torch file cut short; an HF
Trainer checkpoint directory whose trainer_state.json, written last, is missing; a file inside a
checkpoint directory cut short although its marker is there). The re-run must not be handed
it: it resumes from the previous one and its log says which was skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import CLI, REPO, job_id_of
from tests.frameworks.conftest import (
    REMOTE_PYTHON,
    checkpoint_rows,
    need_framework,
    resumed_of,
    steps_of,
)

pytestmark = pytest.mark.slow


def _run_to_end(cli: CLI, command: list[str], cwd: Path) -> tuple[str, str]:
    """Start ``command`` and follow it to its end (it must succeed): (job id, log)."""
    job = job_id_of(cli(*command, cwd=cwd))
    followed = json.loads(cli("logs", job, "--follow", "--json", timeout=300).stdout)
    assert followed["state"] == "succeeded", followed["log"][-3000:]
    return job, str(followed["log"])


def _skip_line(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("[runctl]") and "skip" in line]
    assert lines, log[-3000:]
    return lines[0]


def test_truncated_newest_torch_checkpoint_is_skipped_on_resume(cli: CLI, tmp_path: Path) -> None:
    need_framework("dcp")  # plain torch
    project = tmp_path / "plain"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'plain'\n")
    (project / "train.py").write_text((REPO / "examples" / "train_mnist.py").read_text())
    command = ["run", "--name", "trunc", "train.py", "--", "--epochs", "2", "--samples", "400"]
    first, _ = _run_to_end(cli, command, project)
    newest = Path(checkpoint_rows(cli, first)[-1]["path"])
    assert newest.name == "ckpt_epoch_0002.pt"
    os.truncate(newest, newest.stat().st_size // 2)  # the crash: the file is cut short

    _, log = _run_to_end(cli, command, project)
    assert "at epoch 1" in log and "epoch 2/2" in log, log
    line = _skip_line(log)
    assert "ckpt_epoch_0002.pt" in line and "ckpt_epoch_0001.pt" in line, line


@pytest.mark.integration
def test_half_written_hf_checkpoint_on_ssh_host_is_skipped_on_resume(
    cli: CLI, fw_project: Path, torch_host: str
) -> None:
    need_framework("hf_trainer", REMOTE_PYTHON)
    command = ["run", "--name", "trunc-hf", "--on", torch_host, "train_hf_trainer.py", "--",
               "--steps", "8", "--save-every", "4"]  # fmt: skip
    first, _ = _run_to_end(cli, command, fw_project)
    newest = Path(checkpoint_rows(cli, first)[-1]["path"])
    assert newest.name == "checkpoint-8", newest
    # The crash: the SSH host is this machine, so the test (root) can damage it in place.
    (newest / "trainer_state.json").unlink()
    optimizer = newest / "optimizer.pt"
    os.truncate(optimizer, optimizer.stat().st_size // 2)

    _, log = _run_to_end(cli, command, fw_project)
    resumed = resumed_of(log)
    assert resumed is not None and resumed[0].endswith("/checkpoint-4"), log[-3000:]
    assert steps_of(log) == [5, 6, 7, 8], log[-3000:]
    line = _skip_line(log)
    assert "checkpoint-8" in line and "checkpoint-4" in line, line


def test_hf_checkpoint_with_truncated_optimizer_is_skipped_on_resume(
    cli: CLI, fw_project: Path
) -> None:
    """trainer_state.json is there, but optimizer.pt was cut short (a full disk, a copy that
    stopped): resume_from_checkpoint would fail on it, so the previous checkpoint is used."""
    need_framework("hf_trainer")
    command = ["run", "--name", "trunc-hf-opt", "train_hf_trainer.py", "--",
               "--steps", "8", "--save-every", "4"]  # fmt: skip
    first, _ = _run_to_end(cli, command, fw_project)
    newest = Path(checkpoint_rows(cli, first)[-1]["path"])
    assert newest.name == "checkpoint-8" and (newest / "trainer_state.json").exists(), newest
    optimizer = newest / "optimizer.pt"
    os.truncate(optimizer, optimizer.stat().st_size // 2)
    rows = {Path(r["path"]).name: r for r in checkpoint_rows(cli, first)}
    assert not rows["checkpoint-8"]["complete"], rows["checkpoint-8"]
    assert rows["checkpoint-8"]["problem"].startswith("optimizer.pt: truncated")

    _, log = _run_to_end(cli, command, fw_project)
    resumed = resumed_of(log)
    assert resumed is not None and resumed[0] == str(newest.parent / "checkpoint-4"), log[-3000:]
    assert steps_of(log) == [5, 6, 7, 8], log[-3000:]
    line = _skip_line(log)
    assert "checkpoint-8 (optimizer.pt: truncated" in line and "from checkpoint-4" in line, line


def test_deepspeed_resumes_from_the_tag_runctl_chose_not_latest(
    cli: CLI, fw_project: Path
) -> None:
    """`latest` names global_step8, whose model states were cut short: runctl skips it and
    RUNCTL_RESUME_TAG makes engine.load_checkpoint take global_step4 instead."""
    need_framework("deepspeed")
    command = ["run", "--name", "trunc-ds", "train_deepspeed.py", "--",
               "--steps", "8", "--save-every", "4"]  # fmt: skip
    first, _ = _run_to_end(cli, command, fw_project)
    rows = checkpoint_rows(cli, first)
    assert [(r["name"], r["tag"]) for r in rows] == [
        ("global_step4", "global_step4"), ("global_step8", "global_step8")]  # fmt: skip
    save_dir = Path(rows[-1]["resume_path"])
    assert (save_dir / "latest").read_text().strip() == "global_step8"
    states = save_dir / "global_step8" / "mp_rank_00_model_states.pt"
    os.truncate(states, states.stat().st_size // 2)

    _, log = _run_to_end(cli, command, fw_project)
    assert resumed_of(log) == (str(save_dir), 4), log[-3000:]
    assert steps_of(log) == [5, 6, 7, 8], log[-3000:]
    line = _skip_line(log)
    assert "global_step8 (mp_rank_00_model_states.pt: truncated" in line, line
    assert "from global_step4" in line, line
