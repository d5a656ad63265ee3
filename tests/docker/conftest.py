"""The docker stand (tests/stands/docker.py), shared by this folder's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need


@pytest.fixture(scope="session")
def docker_stand() -> Iterator[Any]:
    from tests.stands.docker import docker_available, start_docker

    need(docker_available())
    stand = start_docker()
    yield stand
    stand.stop()


@pytest.fixture
def dockerd(docker_stand: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The stand, with DOCKER_HOST (and a private docker client config) set for runctl."""
    monkeypatch.setenv("DOCKER_HOST", docker_stand.host)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return docker_stand
