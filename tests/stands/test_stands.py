"""The stands themselves: a loopback sshd and network-namespace hosts really work.

Skipped where they cannot run (not root, packages missing), except under CI=true, where a
stand that cannot run is a failure.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import NetnsHost, NetnsHostBusy, netns_available, start_netns_host
from .sshd import SSHStand, ssh_available, start_sshd

pytestmark = pytest.mark.integration

# Indices 200+ are for these self-tests, away from the hosts the runctl fixtures use; a
# concurrent session holding one makes us move on to the next.
SELF_TEST_INDICES = range(200, 255)


def require(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"stand unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def start_free_host(stand: SSHStand) -> NetnsHost:
    for index in SELF_TEST_INDICES:
        try:
            return start_netns_host(stand, index)
        except NetnsHostBusy:
            continue
    raise RuntimeError(f"all netns host indices {SELF_TEST_INDICES} are busy")


def ssh(argv: list[str], command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*argv, command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHStand]:
    require(ssh_available())
    started = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def host(stand: SSHStand) -> Iterator[NetnsHost]:
    require(netns_available())
    started = start_free_host(stand)
    try:
        yield started
    finally:
        started.stop()


def test_ssh_echo(stand: SSHStand) -> None:
    result = ssh(stand.ssh_argv(), "echo hi")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")
    assert stand.alias() == "testhost"
    assert stand.port > 0
    assert ssh(stand.ssh_argv(), "whoami").stdout == f"{stand.user}\n"


def test_client_env_not_forwarded(stand: SSHStand) -> None:
    env = {**os.environ, "LANG": "C.UTF-8", "RUNCTL_LEAK": "1"}
    result = subprocess.run(
        ["ssh", "-F", str(stand.ssh_config), "-o", "SendEnv=*", stand.alias()]
        + ['echo "[$RUNCTL_LEAK]"'],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "[]\n")


def test_rsync_to_stand(stand: SSHStand, tmp_path: Path) -> None:
    payload = secrets.token_bytes(1 << 20)
    src = tmp_path / "payload.bin"
    src.write_bytes(payload)
    remote_dir = f"runctl-stand-test-{secrets.token_hex(4)}"
    rsh = shlex.join(["ssh", "-F", str(stand.ssh_config)])
    try:
        subprocess.run(
            ["rsync", "-a", "-e", rsh, str(src), f"{stand.alias()}:{remote_dir}/"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        result = ssh(stand.ssh_argv(), f"sha256sum {remote_dir}/payload.bin")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0] == hashlib.sha256(payload).hexdigest()
    finally:
        ssh(stand.ssh_argv(), f"rm -rf {remote_dir}")


def test_stop_kills_detached_remote_processes(tmp_path: Path) -> None:
    require(ssh_available())
    own = start_sshd(tmp_path / "own")
    try:
        result = ssh(own.ssh_argv(), "setsid nohup sleep 300 >/dev/null 2>&1 </dev/null & echo $!")
        assert result.returncode == 0, result.stderr
        pid = int(result.stdout)
        assert alive(pid)
    finally:
        own.stop()
    assert own.proc.poll() is not None
    assert not own.authorized_keys.exists()
    assert not alive(pid)


def alive(pid: int) -> bool:
    """Running, not a zombie (killed orphans wait for init to reap them)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.netns
def test_netns_hostname(host: NetnsHost) -> None:
    assert (host.name, host.address, host.alias()) == (
        f"rhost{host.index}",
        f"10.213.{host.index}.2",
        f"rhost{host.index}",
    )
    result = ssh(host.ssh_argv(), "hostname")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{host.name}\n", "")


@pytest.mark.netns
def test_netns_block_hangs_then_recovers(host: NetnsHost) -> None:
    argv = ["ssh", "-F", str(host.stand.ssh_config), "-o", "ConnectTimeout=2", host.alias()]
    with host.block():
        began = time.monotonic()
        result = ssh(argv, "true")
        elapsed = time.monotonic() - began
        assert result.returncode != 0
        assert elapsed >= 1.5, f"failed fast ({elapsed:.2f} s), not a hang: {result.stderr}"
    result = ssh(argv, "true")
    assert result.returncode == 0, result.stderr


@pytest.mark.netns
def test_netns_stop_cleans_up(stand: SSHStand) -> None:
    require(netns_available())
    spare = start_free_host(stand)
    assert ssh(spare.ssh_argv(), "hostname").stdout == f"rhost{spare.index}\n"
    with pytest.raises(NetnsHostBusy):
        start_netns_host(stand, spare.index)
    spare.stop()
    spare.stop()  # idempotent
    assert spare.proc.poll() is not None
    assert not Path(f"/run/netns/rhost{spare.index}").exists()
    assert not Path(f"/sys/class/net/vh{spare.index}").exists()
