"""The agent's `docker run` command line (no daemon needed)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "runctl_agent_docker", REPO / "src/runctl/agent/runctl_agent.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec(tmp_path: Path, **docker: Any) -> dict[str, Any]:
    for name in ("ckpt", "out"):
        (tmp_path / name).mkdir(exist_ok=True)
    return {
        "job_id": "train-abc123",
        "kind": "script",
        "argv": ["sub/train.py", "--lr", "1e-3"],
        "env": {"WANDB_KEY": "k"},
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "output_dir": str(tmp_path / "out"),
        "docker": {"image": "img:1", "network": "host", **docker},
    }


def _fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-1)'\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_gpus_only_when_the_host_has_them(
    agent: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"RUNCTL_JOB_ID": "train-abc123", "RUNCTL_HOME": "/x", "WANDB_KEY": "k"}
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    argv = agent.docker_argv(_spec(tmp_path), str(tmp_path), env, None)
    assert "--gpus" not in argv
    assert "--gpus" in agent.docker_argv(_spec(tmp_path, gpus="all"), str(tmp_path), env, None)
    _fake_nvidia_smi(tmp_path, monkeypatch)
    argv = agent.docker_argv(_spec(tmp_path), str(tmp_path), env, None)
    assert argv[argv.index("--gpus") + 1] == "all"
    assert "--gpus" not in agent.docker_argv(
        _spec(tmp_path, gpus="none"), str(tmp_path), env, None
    )


def test_mounts_env_names_and_command(agent: ModuleType, tmp_path: Path) -> None:
    env = {"RUNCTL_JOB_ID": "j", "RUNCTL_HOME": "/x", "WANDB_KEY": "k", "OTHER": "o"}
    spec = _spec(tmp_path)
    argv = agent.docker_argv(spec, str(tmp_path), env, None, {"MASTER_ADDR": "h"})
    assert argv[:6] == ["docker", "run", "--rm", "--init", "--name", "runctl-train-abc123"]
    assert f"{tmp_path}:/workspace" in argv and f"{tmp_path / 'ckpt'}:{tmp_path / 'ckpt'}" in argv
    names = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert {"RUNCTL_JOB_ID", "WANDB_KEY", "MASTER_ADDR", "PYTHONUNBUFFERED"} <= set(names)
    assert "RUNCTL_HOME" not in names and "OTHER" not in names
    assert not any("=k" in a for a in argv)  # values stay out of the command line
    assert argv[argv.index("img:1") :] == ["img:1", "python3", "./sub/train.py", "--lr", "1e-3"]
    shell = {**spec, "argv": ["run.sh", "x"]}
    assert agent.docker_argv(shell, str(tmp_path), env, None)[-3:] == ["bash", "./run.sh", "x"]
    cmd = {**spec, "kind": "command", "argv": ["nvidia-smi"]}
    assert agent.docker_argv(cmd, str(tmp_path), env, None)[-2:] == ["img:1", "nvidia-smi"]
