"""Watchdog self-termination on Lyceum: the VM (the loopback sshd stand) deletes itself
through the fake Lyceum API when max-duration passes; the API key lives on the host in a 0600
file and shows up in no output, log, config or state."""

from __future__ import annotations

import json
import pwd
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI
from tests.fakes.fixtures import FAST_WATCHDOG, on_sshd
from tests.fakes.lyceum_server import FakeLyceum
from tests.stands.sshd import SSHStand

pytestmark = pytest.mark.integration


def test_max_duration_makes_the_vm_delete_itself(
    cli: CLI, lyceum_fake: FakeLyceum, sshd: SSHStand, tmp_path: Path, runctl_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    base = on_sshd(lyceum_fake, sshd, tmp_path, monkeypatch, "lywd", FAST_WATCHDOG)
    created = cli("lyceum", "create", "--profile", "h100", "--json")
    assert created.returncode == 0, created.stderr
    vm = json.loads(created.stdout)["id"]
    on = f"lyceum:{vm}"
    outputs: list[Any] = []

    stop = cli("watchdog", "arm", "--on", on, "--max-duration", "1", "--watchdog-action", "stop")
    assert stop.returncode == 6 and "Lyceum has no stop" in stop.stderr
    armed = cli("watchdog", "arm", "--on", on, "--max-duration", "2", "--json")
    status = cli("watchdog", "status", "--on", on, "--json")
    outputs += [stop, armed, status]
    assert armed.returncode == 0, armed.stderr
    cfg = json.loads(armed.stdout)["config"]
    assert cfg["action"] == "terminate" and "spot" not in cfg  # Lyceum has no notices
    assert cfg["recipe"]["http"] == {
        "method": "DELETE", "url": f"{lyceum_fake.api_url}/vms/{vm}",
        "token_file": "secrets/lyceum.key", "auth_header": "Authorization",
        "auth_prefix": "Bearer ",
    }  # fmt: skip
    host_base = Path(pwd.getpwnam(sshd.user).pw_dir) / base
    key_file = host_base / "secrets" / "lyceum.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert key_file.read_text() == lyceum_fake.api_key

    deadline = time.monotonic() + 20
    while lyceum_fake.vms[vm]["status"] != "terminated":  # watchdog self-termination observed
        assert time.monotonic() < deadline, (host_base / "watchdog.log").read_text()
        time.sleep(0.1)
    (delete,) = lyceum_fake.seen("DELETE /vms/{id}")
    assert delete.headers["authorization"] == f"Bearer {lyceum_fake.api_key}"
    listed = cli("lyceum", "list", "--json")
    outputs.append(listed)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    fired = json.loads((host_base / "watchdog-fired.json").read_text())
    assert fired["reason"] == "max-duration" and fired["action"] == "terminate"

    texts = [o.stdout + o.stderr for o in outputs]
    texts += [(host_base / n).read_text() for n in ("watchdog.log", "watchdog.json")]
    texts += [p.read_bytes().decode(errors="replace") for p in runctl_home.glob("state.db*")]
    for text in texts:
        assert lyceum_fake.api_key not in text


def test_create_max_duration_arms_the_vm_watchdog(
    cli: CLI, lyceum_fake: FakeLyceum, sshd: SSHStand, tmp_path: Path, runctl_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`lyceum create --max-duration` alone: the VM deletes itself, no `reap` needed."""
    base = on_sshd(lyceum_fake, sshd, tmp_path, monkeypatch, "lywd2", FAST_WATCHDOG)
    created = cli("lyceum", "create", "--profile", "h100", "--max-duration", "2", "--json")
    assert created.returncode == 0, created.stderr
    assert "watchdog armed" in created.stderr and "action terminate" in created.stderr
    vm = json.loads(created.stdout)["id"]
    host_base = Path(pwd.getpwnam(sshd.user).pw_dir) / base
    deadline = time.monotonic() + 20
    while lyceum_fake.vms[vm]["status"] != "terminated":
        assert time.monotonic() < deadline, (host_base / "watchdog.log").read_text()
        time.sleep(0.1)
    texts = [created.stdout, created.stderr]
    texts += [(host_base / n).read_text() for n in ("watchdog.log", "watchdog.json")]
    texts += [p.read_bytes().decode(errors="replace") for p in runctl_home.glob("state.db*")]
    for text in texts:
        assert lyceum_fake.api_key not in text
