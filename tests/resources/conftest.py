"""Fixtures: moto (AWS), the fake RunPod and Lyceum APIs, all configured for one runctl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fixtures import lyceum_fake, remote_dir, runpod_fake, sleeps
from tests.fakes.lyceum_server import FakeLyceum
from tests.fakes.runpod_server import FakeRunpod
from tests.providers.aws.conftest import MotoAWS, aws_ssh, cli_fast, moto_aws, moto_endpoint

__all__ = ["aws_ssh", "cli_fast", "lyceum_fake", "moto_aws", "moto_endpoint", "runpod_fake",
           "sleeps"]  # fmt: skip

GPU = "NVIDIA GeForce RTX 4090"


def user_config(tmp_path: Path) -> Path:
    return tmp_path / "xdg-config" / "runctl" / "config.toml"


def append_config(tmp_path: Path, text: str) -> None:
    path = user_config(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(text)


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _use_runpod(fake: FakeRunpod, tmp_path: Path, mp: pytest.MonkeyPatch, extra: str = "") -> None:
    mp.setenv("RUNPOD_API_KEY", fake.api_key)
    append_config(
        tmp_path,
        f'\n[runpod]\napi_url = "{fake.rest_url}"\n'
        f'graphql_url = "{fake.graphql_url}"\npoll_interval_s = 0.01\n{extra}',
    )


def _use_lyceum(fake: FakeLyceum, tmp_path: Path, mp: pytest.MonkeyPatch, extra: str = "") -> None:
    mp.setenv("LYCEUM_API_KEY", fake.api_key)
    append_config(
        tmp_path, f'\n[lyceum]\napi_url = "{fake.api_url}"\npoll_interval_s = 0.01\n{extra}'
    )


def _ssh_keys(sshd: Any, prefix: str) -> str:
    return (
        f'ssh_user = "{sshd.user}"\nssh_key = "{sshd.key}"\nremote_dir = "{remote_dir(prefix)}"\n'
    )


@pytest.fixture
def pods(runpod_fake: FakeRunpod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRunpod:
    _use_runpod(runpod_fake, tmp_path, monkeypatch)
    return runpod_fake


@pytest.fixture
def vms(lyceum_fake: FakeLyceum, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLyceum:
    _use_lyceum(lyceum_fake, tmp_path, monkeypatch)
    return lyceum_fake


@pytest.fixture
def clouds(
    moto_aws: MotoAWS, pods: FakeRunpod, vms: FakeLyceum
) -> tuple[MotoAWS, FakeRunpod, FakeLyceum]:
    """All three providers at once (moto's fixture writes the config file first)."""
    return moto_aws, pods, vms


@pytest.fixture
def pods_ssh(
    runpod_fake: FakeRunpod, sshd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeRunpod:
    """The fake RunPod with every pod's SSH endpoint on the loopback sshd stand (use it
    instead of ``pods``, after ``moto_aws`` if both: that one rewrites the config file)."""
    runpod_fake.ssh_port = sshd.port
    _use_runpod(runpod_fake, tmp_path, monkeypatch, _ssh_keys(sshd, "rp"))
    return runpod_fake


@pytest.fixture
def vms_ssh(
    lyceum_fake: FakeLyceum, sshd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeLyceum:
    """The fake Lyceum with every VM's SSH endpoint on the loopback sshd stand."""
    lyceum_fake.ssh_port = sshd.port
    _use_lyceum(lyceum_fake, tmp_path, monkeypatch, _ssh_keys(sshd, "ly"))
    return lyceum_fake
