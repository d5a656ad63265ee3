"""Local-file side of transfers: selection, walking, safe destinations, small helpers."""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runctl.storage.s3.model import MTIME_SLACK_S, LocalFile

# ----------------------------------------------------------------------------- local files


def is_selected(rel: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """Apply --include/--exclude to a relative POSIX path.

    A pattern with no "/" also matches the file name alone, so ``*.pt`` and ``events.*``
    work at any depth. With includes, a file must match one; any exclude match drops it.
    """
    name = rel.rsplit("/", 1)[-1]

    def hit(pattern: str) -> bool:
        return fnmatch.fnmatchcase(rel, pattern) or (
            "/" not in pattern and fnmatch.fnmatchcase(name, pattern)
        )

    include = list(include)
    if include and not any(hit(p) for p in include):
        return False
    return not any(hit(p) for p in exclude)


def walk_local(
    root: Path, include: Iterable[str] = (), exclude: Iterable[str] = (),
    warn: Callable[[str], None] | None = None,
) -> list[LocalFile]:  # fmt: skip
    """Regular files under ``root`` (symlinked directories are not followed), sorted."""
    include, exclude = tuple(include), tuple(exclude)
    found: list[LocalFile] = []

    def unreadable(exc: OSError) -> None:
        _call(warn, f"skipping {exc.filename}: {exc.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not is_selected(rel, include, exclude):
                continue
            try:
                rel.encode()
                st = path.stat()
            except UnicodeEncodeError:
                _call(warn, f"skipping {path}: the name is not valid UTF-8")
                continue
            except OSError as exc:
                _call(warn, f"skipping {path}: {exc.strerror}")
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(LocalFile(rel, path, st.st_size, st.st_mtime))
    return found


def safe_destination(root: Path, rel: str) -> Path | None:
    """Where key part ``rel`` lands under ``root``, or None if that would leave ``root``."""
    if not rel or rel.startswith("/") or "\x00" in rel:
        return None
    if any(sep in rel for sep in (os.sep, os.altsep) if sep and sep != "/"):
        return None
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    target = root.joinpath(*parts)
    try:
        target.resolve().relative_to(root.resolve())  # also catches symlinks out of root
    except (ValueError, OSError):
        return None
    return target


def _call(fn: Callable[[str], None] | None, message: str) -> None:
    if fn is not None:
        fn(message)


def _is_current(
    src_size: int, src_mtime: float, dst_size: int, dst_mtime: float,
    etag: str, local: Path | None,
) -> bool:  # fmt: skip
    """Whether a destination already matches its source (see the module docstring)."""
    if src_size != dst_size:
        return False
    if dst_mtime >= src_mtime - MTIME_SLACK_S:
        return True
    plain_md5 = etag.strip('"')
    if local is None or not plain_md5 or "-" in plain_md5:
        return False
    return _file_digest(local, "md5") == plain_md5


def _file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _thread_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A pool that, when the block fails (or Ctrl-C), drops queued work instead of running it."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="runctl-s3")
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
