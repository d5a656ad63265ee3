"""Watchdog on RunPod: with runctl silent (lost controller) the pod (the loopback sshd stand)
stops itself through the fake RunPod REST API; the key travels in a 0600 file only."""

from __future__ import annotations

import json
import pwd
import stat
import time
from pathlib import Path

import pytest

from tests.conftest import CLI
from tests.fakes.fixtures import FAST_WATCHDOG, on_sshd
from tests.fakes.runpod_server import FakeRunpod
from tests.stands.sshd import SSHStand

pytestmark = pytest.mark.integration


def test_lost_controller_makes_the_pod_stop_itself(
    cli: CLI, runpod_fake: FakeRunpod, sshd: SSHStand, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    base = on_sshd(runpod_fake, sshd, tmp_path, monkeypatch, "rpwd", FAST_WATCHDOG)
    created = cli("runpod", "create", "--gpu", "NVIDIA GeForce RTX 4090", "--json")
    assert created.returncode == 0, created.stderr
    pod = json.loads(created.stdout)["id"]
    armed = cli("watchdog", "arm", "--on", f"runpod:{pod}", "--lost-controller-timeout", "1",
                "--json")  # fmt: skip
    assert armed.returncode == 0, armed.stderr
    assert runpod_fake.api_key not in armed.stdout + armed.stderr
    http = json.loads(armed.stdout)["config"]["recipe"]["http"]
    assert http["method"] == "POST" and http["body"] == {"action": "stop"}  # default: stop
    key_file = Path(pwd.getpwnam(sshd.user).pw_dir) / base / "secrets" / "runpod.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    deadline = time.monotonic() + 20
    while runpod_fake.pods[pod]["status"] != "EXITED":
        assert time.monotonic() < deadline, "the pod never stopped itself"
        time.sleep(0.1)
    (sent,) = runpod_fake.seen("POST /v2/pods/{id}/action")
    assert sent.headers["authorization"] == f"Bearer {runpod_fake.api_key}"
