"""A user trains with a real framework, cancels, re-runs the same command and it resumes.

For Lightning, HF Trainer, Accelerate, torch.distributed.checkpoint and DeepSpeed, locally and
on an SSH host: the first run is cancelled after two checkpoints, `checkpoint list` shows them
oldest first, `cleanup --keep-last-n 1` leaves exactly the newest complete one (intact), and
the same command again resumes from it (the framework loads it) with no step done twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, job_id_of
from tests.frameworks.conftest import (
    REMOTE_PYTHON,
    checkpoint_rows,
    need_framework,
    resumed_of,
    script_of,
    steps_of,
    wait_for_step,
)

pytestmark = pytest.mark.slow

FRAMEWORKS = ["lightning", "hf_trainer", "accelerate", "dcp", "deepspeed"]
TOTAL, EVERY, HOLD = 12, 4, 10
# A fresh run waits at step 10 (after the checkpoints of steps 4 and 8) until it is cancelled.
ARGS = ["--steps", str(TOTAL), "--save-every", str(EVERY), "--hold-at", str(HOLD)]


def _numbered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checkpoints cleanup may delete (Lightning's last.ckpt is kept unless named)."""
    return [r for r in rows if not r.get("protected")]


def _newest_complete(rows: list[dict[str, Any]]) -> dict[str, Any]:
    complete = [r for r in rows if r["complete"]]
    assert complete, rows
    return complete[-1]


def _story(cli: CLI, project: Path, framework: str, on: list[str]) -> None:
    command = ["run", "--name", f"fw-{framework}", *on, script_of(framework), "--", *ARGS]
    first = job_id_of(cli(*command, cwd=project))
    wait_for_step(cli, first, HOLD)
    cancelled = cli("cancel", first, "--grace", "5", "--json")
    assert json.loads(cancelled.stdout)["state"] == "cancelled", cancelled.stderr

    rows = checkpoint_rows(cli, first)
    steps = [r["step"] for r in _numbered(rows)]
    assert steps == sorted(steps) and {4, 8} <= set(steps), rows
    if framework == "lightning":  # last.ckpt is the newest, not the oldest
        assert Path(rows[-1]["path"]).name == "last.ckpt", rows
    newest = _newest_complete(_numbered(rows))

    cleaned = cli("checkpoint", "cleanup", f"job:{first}", "--keep-last-n", "1", "--yes")
    assert cleaned.returncode == 0, cleaned.stderr
    left = checkpoint_rows(cli, first)
    assert [r["path"] for r in _numbered(left) if r["complete"]] == [newest["path"]], left
    kept = next(r for r in left if r["path"] == newest["path"])
    assert kept["bytes"] == newest["bytes"] and kept["complete"], (newest, kept)
    resume_row = _newest_complete(left)  # Lightning: last.ckpt, a copy of the newest
    assert resume_row["step"] == newest["step"], left

    # The same command again: the framework loads the kept checkpoint and carries on.
    second = job_id_of(cli(*command, cwd=project))
    followed = json.loads(cli("logs", second, "--follow", "--json", timeout=300).stdout)
    log = followed["log"]
    assert followed["state"] == "succeeded", log[-3000:]
    resumed = resumed_of(log)
    assert resumed is not None, log[-3000:]
    assert resumed == (resume_row["resume_path"], newest["step"]), (resumed, resume_row)
    assert steps_of(log) == list(range(newest["step"] + 1, TOTAL + 1)), log[-3000:]
    assert f"DONE at step {TOTAL}" in log

    final = _numbered(checkpoint_rows(cli, second))
    assert [r["step"] for r in final] == sorted(r["step"] for r in final), final
    assert final[-1]["step"] == TOTAL and final[-1]["complete"], final


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cancelled_local_training_resumes_from_newest_checkpoint(
    cli: CLI, fw_project: Path, framework: str
) -> None:
    need_framework(framework)
    _story(cli, fw_project, framework, [])


@pytest.mark.integration
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cancelled_ssh_training_resumes_from_newest_checkpoint(
    cli: CLI, fw_project: Path, torch_host: str, framework: str
) -> None:
    need_framework(framework, REMOTE_PYTHON)
    _story(cli, fw_project, framework, ["--on", torch_host])
