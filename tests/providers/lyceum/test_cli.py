"""``runctl lyceum`` end to end: the real CLI, the fake Lyceum API, VMs mapped to a real sshd."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runctl.state.store import Store
from tests.conftest import CLI
from tests.fakes.fixtures import remote_dir, write_user_config
from tests.fakes.lyceum_server import FakeLyceum
from tests.stands.sshd import SSHStand


def _config(fake: FakeLyceum, tmp_path: Path, extra: str = "") -> None:
    write_user_config(
        tmp_path,
        f"""
[lyceum]
api_url = "{fake.api_url}"
poll_interval_s = 0.01
{extra}
""",
    )


@pytest.fixture
def vms(lyceum_fake: FakeLyceum, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLyceum:
    monkeypatch.setenv("LYCEUM_API_KEY", lyceum_fake.api_key)
    _config(lyceum_fake, tmp_path)
    return lyceum_fake


@pytest.fixture
def vms_ssh(
    lyceum_fake: FakeLyceum, sshd: SSHStand, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeLyceum:
    """VMs whose ``ip_address`` is ``127.0.0.1:<sshd port>`` (the host:port quirk)."""
    lyceum_fake.ssh_port = sshd.port
    monkeypatch.setenv("LYCEUM_API_KEY", lyceum_fake.api_key)
    _config(
        lyceum_fake,
        tmp_path,
        f"""
ssh_user = "{sshd.user}"
ssh_key = "{sshd.key}"
remote_dir = "{remote_dir("ly")}"
""",
    )
    return lyceum_fake


def _ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.integration
def test_vm_lifecycle_train_monitor_no_stop_and_reap(
    cli: CLI, vms_ssh: FakeLyceum, sshd: SSHStand, project: Path, runctl_home: Path
) -> None:
    created = _ok(
        cli(
            "lyceum",
            "create",
            "--profile",
            "h100",
            "--name",
            "exp",
            "--max-duration",
            "3s",
            "--json",
        )
    )
    assert isinstance(created, dict)
    vm = created["id"]
    assert created["state"] == "running" and created["hourly_usd"] == 2.79
    assert created["ssh"]["port"] == sshd.port and created["ssh"]["user"] == sshd.user
    assert vms_ssh.keys[vm] == Path(f"{sshd.key}.pub").read_text().strip()
    # The VM's own watchdog would delete it in 3 s; disarmed, `reap` is what is left.
    disarmed = cli("watchdog", "disarm", "--on", f"lyceum:{vm}", "--json")
    assert disarmed.returncode == 0 and vms_ssh.vms[vm]["status"] == "ready", disarmed.stderr

    done = cli(
        "lyceum",
        "train",
        "--vm-id",
        vm,
        "--follow",
        "hello.py",
        "--",
        "x y",
        "--lines",
        "1",
        cwd=project,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "arg: 'x y'" and done.stdout.endswith("line 1\n")
    monitor = cli("lyceum", "monitor", "--vm-id", vm, "-n", "1")
    assert monitor.returncode == 0 and monitor.stdout == "line 1\n", monitor.stderr

    stop = cli("lyceum", "stop", "--vm-id", vm)
    assert stop.returncode == 6 and "cannot be stopped" in stop.stderr
    assert "lyceum terminate" in stop.stderr

    expires = datetime.fromisoformat(created["expires_at"])
    while datetime.now(UTC) <= expires:
        time.sleep(0.2)
    due = _ok(cli("lyceum", "reap", "--dry-run", "--json"))
    assert due == [
        {"id": vm, "name": created["name"], "expires_at": created["expires_at"], "deleted": False}
    ]
    assert vms_ssh.vms[vm]["status"] == "ready"
    assert _ok(cli("lyceum", "reap", "--json"))[0]["deleted"] is True
    assert vms_ssh.vms[vm]["status"] == "terminated"
    assert _ok(cli("lyceum", "list", "--json")) == []
    record = Store.open(runctl_home / "state.db").get_instance_record("lyceum", vm)
    assert record is not None and record["state"] == "terminated" and record["hourly_usd"] == 2.79


def test_spot_vm_price_and_deadline_in_the_future(cli: CLI, vms: FakeLyceum) -> None:
    created = _ok(cli("lyceum", "create", "--spot", "--max-duration", "8h", "--no-wait", "--json"))
    assert isinstance(created, dict)
    assert created["hourly_usd"] == 1.1 and created["spot"] is True
    assert created["instance_type"] == "spot" and created["expires_at"]
    assert _ok(cli("lyceum", "reap", "--json")) == []
    status = _ok(cli("lyceum", "status", "--vm-id", created["id"], "--wait", "--json"))
    assert isinstance(status, dict) and status["ssh"]["host"] == "127.0.0.1"


def test_two_gpu_price_comes_from_the_pricing_table(cli: CLI, vms: FakeLyceum) -> None:
    created = _ok(cli("lyceum", "create", "--gpu-count", "2", "--no-wait", "--json"))
    assert isinstance(created, dict) and created["hourly_usd"] == 5.58
    assert vms.seen("POST /vms/create")[0].body["instance_specs"] == {"gpu_count": 2}


def test_no_capacity_is_exit_8_with_hint(cli: CLI, vms: FakeLyceum) -> None:
    vms.no_capacity.add(("h100", "on-demand"))
    done = cli("lyceum", "create", "--profile", "h100")
    assert done.returncode == 8 and "Lyceum has no capacity" in done.stderr
    assert "hint: try another --profile" in done.stderr
    assert len(vms.seen("POST /vms/create")) == 1


def test_offers_and_bad_duration(cli: CLI, vms: FakeLyceum) -> None:
    offers = _ok(cli("lyceum", "offers", "--json"))
    assert {
        "profile": "h100",
        "instance_type": "spot",
        "hourly_usd_per_gpu": 1.1,
        "allowed_gpus": [1, 2, 4, 8],
        "available_gpus": [1, 2, 8],
    } in offers
    bad = cli("lyceum", "create", "--max-duration", "soon")
    assert bad.returncode == 2 and "invalid duration" in bad.stderr
    assert vms.seen("POST /vms/create") == []


def test_missing_key_and_bad_key(
    cli: CLI, lyceum_fake: FakeLyceum, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(lyceum_fake, tmp_path)
    monkeypatch.delenv("LYCEUM_API_KEY", raising=False)
    missing = cli("lyceum", "list")
    assert missing.returncode == 4 and "LYCEUM_API_KEY" in missing.stderr
    monkeypatch.setenv("LYCEUM_API_KEY", "lk_not_valid_secret")
    bad = cli("lyceum", "list", "--json")
    assert bad.returncode == 4 and "lk_not_valid_secret" not in bad.stdout + bad.stderr
