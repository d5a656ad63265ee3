"""Real training frameworks (CPU, offline, tiny random models) run through runctl.

The scripts are examples/frameworks/*.py. Each prints ``STEP n`` after every optimizer step,
``RESUMED <path> at step <n>`` when it resumed and ``DONE at step <n>`` at the end, so a test
can assert the global-step sequence of a job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, REPO, need

EXAMPLES = REPO / "examples" / "frameworks"
REMOTE_PYTHON = os.environ.get("RUNCTL_TEST_TORCH_PYTHON", "/opt/runctl-test-torch/bin/python")
# The import name each script needs, to skip (locally) where it is not installed.
MODULES = {
    "lightning": "lightning",
    "hf_trainer": "transformers",
    "accelerate": "accelerate",
    "dcp": "torch",
    "deepspeed": "deepspeed",
}


def script_of(framework: str) -> str:
    return f"train_{framework}.py"


def need_framework(framework: str, python: str | None = None) -> None:
    """Skip (fail in CI) unless ``framework`` is importable here, or by ``python`` (a venv's)."""
    module = MODULES[framework]
    if python is None:
        found = importlib.util.find_spec(module) is not None
    else:  # look, rather than start an interpreter and import it (seconds)
        found = any(Path(python).parent.parent.glob(f"lib/python3*/site-packages/{module}"))
    need(None if found else f"{module} is not installed for {python or 'this python'}")


@pytest.fixture
def fw_project(tmp_path: Path) -> Path:
    """A project holding the framework example scripts (as a user's repo would)."""
    root = tmp_path / "fwproj"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'fwproj'\n")
    for script in EXAMPLES.glob("*.py"):
        (root / script.name).write_text(script.read_text())
    return root


@pytest.fixture
def torch_host(cli: CLI, ssh_config: Path) -> str:
    """An SSH host (the sshd stand) whose python has torch and the frameworks installed."""
    need(None if Path(REMOTE_PYTHON).exists() else f"no torch interpreter at {REMOTE_PYTHON}")
    added = cli("hosts", "add", "fwhost", "testhost", "--python", REMOTE_PYTHON,
                "--remote-dir", f".runctl-fw-{time.time_ns()}")  # fmt: skip
    assert added.returncode == 0, added.stderr
    return "fwhost"


def steps_of(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"STEP (\d+)\b", log)]


def resumed_of(log: str) -> tuple[str, int] | None:
    found = re.search(r"RESUMED (\S+) at step (\d+)", log)
    return (found.group(1), int(found.group(2))) if found else None


def checkpoint_rows(cli: CLI, job: str) -> list[dict[str, Any]]:
    listed = cli("checkpoint", "list", f"job:{job}", "--json")
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, Any]] = json.loads(listed.stdout)
    return rows


def wait_for_step(cli: CLI, job: str, step: int, timeout: float = 120) -> str:
    """Poll the log until the job has printed ``STEP step`` (fails on job end/timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = cli("logs", job, "--json")
        answer = json.loads(shown.stdout)
        if step in steps_of(answer["log"]):
            return str(answer["log"])
        assert answer["state"] in ("submitting", "starting", "setup", "running"), answer
        time.sleep(0.5)  # each look starts a CLI: spare the CPU the job is importing with
    pytest.fail(f"job {job} never reached step {step}: {cli('logs', job).stdout[-3000:]}")
