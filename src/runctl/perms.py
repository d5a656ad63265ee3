"""Private files: what runctl keeps locally (RUNCTL_HOME, the state DB, job dirs, caches,
keys) is readable by its owner only. New ones are created 0700/0600; an existing one that
others may read is tightened on first use, with one line on stderr saying so."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700 (missing parents too: RUNCTL_HOME itself may not exist yet), or
    tighten it to 0700."""
    missing = []
    here = path
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    if path.is_dir():
        _tighten(path, 0o700)
    return path


def private_file(path: Path, *, create: bool = True) -> None:
    """Make ``path`` 0600: created empty if missing (``create``), tightened if others may
    read it. SQLite gives a database's -wal/-shm files the database file's mode."""
    if create:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return
        except FileExistsError:
            pass
    if path.is_file():  # not a directory or socket someone put there: Store.open names those
        _tighten(path, 0o600)


def _tighten(path: Path, mode: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    # Never the home directory itself (RUNCTL_HOME=~ is the user's choice) or /.
    shared = path.resolve() in (Path("/"), Path.home().resolve())
    if info.st_mode & 0o077 and info.st_uid == os.geteuid() and not shared:
        os.chmod(path, mode)
        sys.stderr.write(
            f"runctl: {path} was open to other users ({info.st_mode & 0o777:o}); "
            f"made it {mode:o}\n"
        )
