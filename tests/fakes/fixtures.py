"""pytest fixtures for the fake cloud APIs; import them into a test folder's conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.lyceum_server import FakeLyceum
from tests.fakes.runpod_server import FakeRunpod


class Sleeps(list[float]):
    """A stand-in for time.sleep that records the delays instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def runpod_fake() -> Iterator[FakeRunpod]:
    fake = FakeRunpod()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def lyceum_fake() -> Iterator[FakeLyceum]:
    fake = FakeLyceum()
    fake.start()
    yield fake
    fake.stop()


def write_user_config(tmp_path: Path, text: str) -> Path:
    """Write the user config file the autouse ``runctl_home`` fixture points runctl at."""
    path = tmp_path / "xdg-config" / "runctl" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def remote_dir(prefix: str) -> str:
    """A fresh runctl directory on the stand per test (relative to the test user's home)."""
    return f".{prefix}-{os.urandom(4).hex()}"
