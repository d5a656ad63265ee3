"""A host's python is reused: requirements.txt installs only what it lacks (real sshd, torch).

The SSH test user's torch interpreter is a venv (/opt/runctl-test-torch) holding torch; a job
venv made from it used to see none of its packages and pulled torch again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import CLI, need

pytestmark = pytest.mark.integration

TORCH_PYTHON = os.environ.get("RUNCTL_TEST_TORCH_PYTHON", "/opt/runctl-test-torch/bin/python")
TORCH_PREFIX = str(Path(TORCH_PYTHON).parent.parent)
# Tiny pure-python packages the torch venv does not have; served from the machine's local
# wheel directory when it has them (offline), from the index otherwise.
SMALL = ("termcolor", "tabulate", "six")
LOCAL_WHEELS = Path("/opt/pypi/files")

SHOW = """\
import sys, torch
print("python:", sys.executable)
print("torch:", torch.__version__, torch.__file__)
for name in sys.argv[1:]:
    print(name + ":", __import__(name).__file__)
"""


def _remote(sshd: object, *argv: str) -> str:
    out = subprocess.run(
        [*sshd.ssh_argv(), "--", *argv],  # type: ignore[attr-defined]
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    return str(out.stdout)


def _host_lacks(name: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is not None)"
    return subprocess.run([TORCH_PYTHON, "-c", probe], check=False).returncode == 0


@pytest.fixture
def remote_dir() -> str:
    return f".runctl-hostenv-{os.urandom(4).hex()}"


@pytest.fixture
def torch_host(cli: CLI, ssh_config: Path, sshd: object, remote_dir: str) -> dict[str, object]:
    need(None if Path(TORCH_PYTHON).exists() else f"no torch interpreter at {TORCH_PYTHON}")
    done = cli("hosts", "add", "torchbox", "testhost", "--python", TORCH_PYTHON,
               "--remote-dir", remote_dir, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    facts: dict[str, object] = json.loads(done.stdout)
    return facts


def test_hosts_add_shows_the_python_and_torch_it_found(
    cli: CLI, torch_host: dict[str, object], remote_dir: str
) -> None:
    code = "import torch; print(torch.__version__, torch.version.cuda)"
    version, cuda = subprocess.run([TORCH_PYTHON, "-c", code], capture_output=True, text=True,
                                   check=True).stdout.split()  # fmt: skip
    assert torch_host["python_path"] == TORCH_PYTHON
    assert torch_host["python_env"] == "venv"
    assert torch_host["torch"] == version
    assert torch_host["torch_cuda"] is None and cuda == "None"  # a CPU build
    again = cli("hosts", "add", "torchbox", "testhost", "--python", TORCH_PYTHON,
                "--remote-dir", remote_dir, "--replace")  # fmt: skip
    assert again.returncode == 0, again.stderr
    found = f"python {torch_host['python']} at {TORCH_PYTHON} (venv); torch {version} (CPU-only"
    assert found in again.stdout


def test_requirements_the_hosts_python_already_satisfies_install_nothing(
    cli: CLI, torch_host: dict[str, object], project: Path, sshd: object, remote_dir: str
) -> None:
    (project / "requirements.txt").write_text(
        "# what a user of a DLAMI writes\n"
        "--extra-index-url http://127.0.0.1:9/whl/cu121\n"  # never contacted: nothing to install
        "torch>=2.0\nnumpy\n"
    )
    (project / "show.py").write_text(SHOW)
    done = cli("run", "--on", "torchbox", "--follow", "show.py", "--", "numpy",
               cwd=project, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    log = done.stdout
    assert f"requirements.txt already satisfied by {TORCH_PYTHON}; installing nothing" in log
    assert "Collecting" not in log and "Downloading" not in log
    assert f"python: {TORCH_PYTHON}" in log
    torch_line = next(line for line in log.splitlines() if line.startswith("torch:"))
    assert torch_line.split()[-1].startswith(f"{TORCH_PREFIX}/lib/")
    assert "venvs" not in _remote(sshd, "ls", remote_dir)  # no venv was even made


def test_a_missing_requirement_goes_into_the_job_venv_and_torch_stays_the_hosts(
    cli: CLI, torch_host: dict[str, object], project: Path, sshd: object, remote_dir: str
) -> None:
    missing = next((n for n in SMALL if _host_lacks(n)), None)
    need(None if missing else f"{TORCH_PYTHON} already has all of {SMALL}")
    assert missing is not None
    env: list[str] = []
    wheels = list(LOCAL_WHEELS.glob(f"{missing}-*.whl")) if LOCAL_WHEELS.is_dir() else []
    if wheels:  # offline: pip takes the package from the local directory
        env = ["--env", "PIP_NO_INDEX=1", "--env", f"PIP_FIND_LINKS={LOCAL_WHEELS}"]
    (project / "requirements.txt").write_text(f"torch\nnumpy>=1.0\n{missing}\n")
    (project / "show.py").write_text(SHOW)
    done = cli("run", "--on", "torchbox", "--follow", *env, "show.py", "--", missing,
               cwd=project, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    log = done.stdout
    assert f"not satisfied by {TORCH_PYTHON}: {missing}" in log, log
    assert "[runctl] installing requirements.txt into" in log
    venv = f"{remote_dir}/venvs/proj"
    # The package came into the job venv; torch was the host's, never fetched nor installed.
    package_line = next(line for line in log.splitlines() if line.startswith(f"{missing}:"))
    assert "/venvs/proj/" in package_line
    torch_line = next(line for line in log.splitlines() if line.startswith("torch:"))
    assert torch_line.split()[-1].startswith(f"{TORCH_PREFIX}/lib/")
    assert "Requirement already satisfied: torch" in log
    assert "Collecting torch" not in log and "Downloading torch" not in log
    site = _remote(sshd, f"ls {venv}/lib/python3*/site-packages")  # one word: a shell glob
    assert missing in site and "torch" not in site.replace("_runctl_host_python.pth", "")
    pins = _remote(sshd, "cat", f"{venv}/.runctl-constraints.txt")
    assert f"torch=={torch_host['torch']}" in pins.splitlines()
    # Same requirements again: the venv is reused as it is.
    again = cli("run", "--on", "torchbox", "--follow", *env, "show.py", "--", missing,
                cwd=project, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "requirements.txt unchanged" in again.stdout


def test_hosts_add_names_the_cuda_build_of_torch(
    cli: CLI, ssh_config: Path, sshd: object, remote_dir: str
) -> None:
    # A python whose torch is a CUDA 12.1 build (its metadata and version.py, as pip lays them
    # out): the probe reads them without importing torch.
    root = Path(tempfile.mkdtemp(prefix="runctl-cudatorch-", dir="/tmp"))
    try:
        site = root / "site"
        (site / "torch").mkdir(parents=True)
        (site / "torch" / "__init__.py").write_text("raise ImportError('never imported')\n")
        (site / "torch" / "version.py").write_text(
            "from typing import Optional\n__version__ = '2.3.1+cu121'\n"
            "cuda: Optional[str] = '12.1'\nhip: Optional[str] = None\n"
        )
        (site / "torch-2.3.1+cu121.dist-info").mkdir()
        (site / "torch-2.3.1+cu121.dist-info" / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: torch\nVersion: 2.3.1+cu121\n"
        )
        python = root / "python"
        python.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec /usr/bin/python3 "$@"\n')
        python.chmod(0o755)
        for path in (root, *root.rglob("*")):  # readable by the ssh test user
            path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o444))
        done = cli("hosts", "add", "cudabox", "testhost", "--python", str(python),
                   "--remote-dir", remote_dir, "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        facts = json.loads(done.stdout)
        assert facts["torch"] == "2.3.1+cu121" and facts["torch_cuda"] == "12.1"
        assert facts["python_env"] == "system"
        text = cli("hosts", "add", "cudabox", "testhost", "--python", str(python),
                   "--remote-dir", remote_dir, "--replace")  # fmt: skip
        assert "torch 2.3.1+cu121 (CUDA 12.1)" in text.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
