"""A full disk, here or on the host: the real cause, a hint and exit 11 — never a bug."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CLI, job_id_of
from tests.hostile.conftest import assert_final_job_answers_fast, assert_typed, fill


def test_full_local_disk_is_a_typed_error(
    cli: CLI, tmpfs: Callable[..., Path], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmpfs("disk", size="1m")
    monkeypatch.setenv("RUNCTL_HOME", str(disk / "home"))
    assert cli("jobs").returncode == 0
    fill(disk)
    done = cli("run", "hello.py", cwd=project)
    assert_typed(done, 11, "no space left on device")
    assert_typed(cli("jobs"), 11, "no space left on device")
    (disk / "filler").unlink()
    # Space back: runctl works again.
    assert cli("wait", job_id_of(cli("run", "hello.py", cwd=project))).returncode == 0


def test_full_disk_on_the_host_names_the_cause(
    cli: CLI, ssh_config: Path, sshd: object, tmpfs: Callable[..., Path], project: Path
) -> None:
    user = pwd.getpwnam(sshd.user)  # type: ignore[attr-defined]
    name = f".runctl-full-{os.urandom(3).hex()}"
    disk = tmpfs(name, size="2m", uid=user.pw_uid, under=Path(user.pw_dir))
    assert cli("hosts", "add", "full", "testhost", "--remote-dir", name).returncode == 0
    first = cli("run", "--on", "ssh:full", "hello.py", cwd=project)
    assert cli("wait", job_id_of(first)).returncode == 0
    fill(disk)
    done = cli("run", "--on", "ssh:full", "hello.py", cwd=project)
    assert_typed(done, 11, "No space left on device", "on full")
    assert "^^^" not in done.stderr
    assert_final_job_answers_fast(cli, job_id_of(first))


def test_get_into_a_bad_destination_is_a_filesystem_error(
    cli: CLI, tmpfs: Callable[..., Path], project: Path, tmp_path: Path
) -> None:
    job = job_id_of(cli("run", "hello.py", cwd=project))
    assert cli("wait", job).returncode == 0
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    assert_typed(cli("get", job, "log", str(tmp_path / "loop1")), 11, "symbolic links")
    ro = tmpfs("ro", ro=True)
    assert_typed(cli("get", job, "log", str(ro / "x")), 11, "read-only file system")
    disk = tmpfs("small", size="64k")
    fill(disk)
    assert_typed(cli("get", job, "log", str(disk / "x")), 11, "no space left on device")


def test_full_host_disk_before_the_first_sync(
    cli: CLI, ssh_config: Path, sshd: object, tmpfs: Callable[..., Path], project: Path
) -> None:
    user = pwd.getpwnam(sshd.user)  # type: ignore[attr-defined]
    name = f".runctl-full-{os.urandom(3).hex()}"
    disk = tmpfs(name, size="1m", uid=user.pw_uid, under=Path(user.pw_dir))
    assert cli("hosts", "add", "full", "testhost", "--remote-dir", name).returncode == 0
    fill(disk)
    done = cli("run", "--on", "ssh:full", "hello.py", cwd=project)
    assert_typed(done, 11, "No space left on device")
