"""The last bytes of a finished job's log, kept under RUNCTL_HOME when runctl sees it end.

So that `logs` (and the dashboard) can still answer for a past job when its host is gone or
its job directory was removed. Private like the rest of the home (0700 dir, 0600 files):
a log may hold whatever the job printed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from runctl.runtime import Runtime

CACHE_BYTES = 64 * 1024


class Tail:
    """The last ``limit`` bytes of a stream, kept as it is written."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._chunks and self._size - len(self._chunks[0]) >= self.limit:
            self._size -= len(self._chunks.pop(0))

    def data(self) -> bytes:
        return b"".join(self._chunks)[-self.limit :]


def _path(runtime: Runtime, job_id: str) -> Path:
    return runtime.home / "logs" / f"{job_id}.tail"


def exists(runtime: Runtime, job_id: str) -> bool:
    return _path(runtime, job_id).is_file()


def save(runtime: Runtime, job_id: str, data: bytes) -> None:
    """Keep ``data`` (the end of the log); best effort: a full or read-only disk skips it."""
    path = _path(runtime, job_id)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data[-CACHE_BYTES:])
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def load(runtime: Runtime, job_id: str) -> bytes | None:
    try:
        return _path(runtime, job_id).read_bytes()
    except OSError:
        return None


def last_lines(data: bytes, count: int) -> bytes:
    """The last ``count`` lines of ``data`` (all of it for 0)."""
    if count <= 0:
        return data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:])
