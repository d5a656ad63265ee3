"""Helpers for the hostile-environment tests: tiny tmpfs mounts (we run as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _can_mount() -> str | None:
    if shutil.which("mount") is None:
        return "no mount(8)"
    return None


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(name, size="1m", uid=0, ro=False)`` mounts a small tmpfs; unmounted after."""
    from tests.conftest import need

    need(_can_mount())
    mounted: list[Path] = []

    def mount(
        name: str, size: str = "1m", uid: int = 0, ro: bool = False, under: Path | None = None
    ) -> Path:
        where = (under or tmp_path) / name
        where.mkdir()
        opts = f"size={size},uid={uid},gid={uid},mode=0700" + (",ro" if ro else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        need(None if done.returncode == 0 else f"cannot mount a tmpfs: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)
        if where.parent != tmp_path:
            where.rmdir()


def fill(directory: Path) -> None:
    """Use up every free block of the filesystem holding ``directory``."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def assert_typed(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """One clean error line (+ hint), the documented exit code, no traceback."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    assert "hint: " in done.stderr, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def assert_final_job_answers_fast(
    cli: object, job: str, env: dict[str, str] | None = None
) -> None:
    """`status`, `logs`, `wait` and `top --json` about a finished job: each within 5 s."""
    import time

    for argv in (["status", job], ["logs", job], ["wait", job], ["top", "--json"]):
        started = time.monotonic()
        done = cli(*argv, env=env)  # type: ignore[operator]
        took = time.monotonic() - started
        assert took < 5, f"`runctl {' '.join(argv)}` took {took:.1f}s"
        assert "Traceback" not in done.stderr and done.returncode != 70, done.stderr
