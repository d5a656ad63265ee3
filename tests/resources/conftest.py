"""Fixtures: moto (AWS), the fake RunPod and Lyceum APIs, all configured for one runctl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fixtures import lyceum_fake, runpod_fake, sleeps
from tests.fakes.lyceum_server import FakeLyceum
from tests.fakes.runpod_server import FakeRunpod
from tests.providers.aws.conftest import MotoAWS, moto_aws, moto_endpoint

__all__ = ["lyceum_fake", "moto_aws", "moto_endpoint", "runpod_fake", "sleeps"]

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


@pytest.fixture
def pods(runpod_fake: FakeRunpod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRunpod:
    monkeypatch.setenv("RUNPOD_API_KEY", runpod_fake.api_key)
    append_config(
        tmp_path,
        f'\n[runpod]\napi_url = "{runpod_fake.rest_url}"\n'
        f'graphql_url = "{runpod_fake.graphql_url}"\npoll_interval_s = 0.01\n',
    )
    return runpod_fake


@pytest.fixture
def vms(lyceum_fake: FakeLyceum, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLyceum:
    monkeypatch.setenv("LYCEUM_API_KEY", lyceum_fake.api_key)
    append_config(
        tmp_path, f'\n[lyceum]\napi_url = "{lyceum_fake.api_url}"\npoll_interval_s = 0.01\n'
    )
    return lyceum_fake


@pytest.fixture
def clouds(
    moto_aws: MotoAWS, pods: FakeRunpod, vms: FakeLyceum
) -> tuple[MotoAWS, FakeRunpod, FakeLyceum]:
    """All three providers at once (moto's fixture writes the config file first)."""
    return moto_aws, pods, vms
