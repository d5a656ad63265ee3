"""pytest fixtures for the fake cloud APIs; import them into a test folder's conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


#: the host watchdog checks its policies every 0.2 s
FAST_WATCHDOG = "[watchdog]\ncheck_s = 0.2\n"


def on_sshd(fake: FakeRunpod | FakeLyceum, sshd: Any, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch, prefix: str, extra: str = "") -> str:  # fmt: skip
    """Point runctl at ``fake`` with every pod/VM's SSH endpoint on the loopback sshd stand:
    the API key in the environment, the user config written (``extra`` TOML appended).
    Returns runctl's directory on the "machines" (relative to the test user's home)."""
    fake.ssh_port = sshd.port
    base = remote_dir(prefix)
    if isinstance(fake, FakeRunpod):
        monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
        head = f'[runpod]\napi_url = "{fake.rest_url}"\ngraphql_url = "{fake.graphql_url}"\n'
    else:
        monkeypatch.setenv("LYCEUM_API_KEY", fake.api_key)
        head = f'[lyceum]\napi_url = "{fake.api_url}"\n'
    write_user_config(tmp_path, head + f"""poll_interval_s = 0.01
ssh_user = "{sshd.user}"
ssh_key = "{sshd.key}"
remote_dir = "{base}"
{extra}""")  # fmt: skip
    return base
