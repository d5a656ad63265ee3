"""Open the state database: WAL mode, a busy timeout for concurrent CLIs, migrations on connect.

Many ``runctl`` processes may run at once (a follow in one terminal, submits from a script),
so every write happens in a short ``BEGIN IMMEDIATE`` transaction and readers never block
writers (WAL). No network call ever happens inside a transaction.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from runctl.errors import FileSystemError, RunctlError, StateError
from runctl.state.migrations import MIGRATIONS

BUSY_TIMEOUT_S = 30.0
DOCTOR_HINT = (
    "run `runctl doctor --fix` to rebuild the index of jobs and machines from your hosts "
    "and providers"
)


def busy_timeout_s() -> float:
    """How long a command waits for another one's write lock (RUNCTL_DB_TIMEOUT_S for tests)."""
    try:
        value = float(os.environ.get("RUNCTL_DB_TIMEOUT_S", BUSY_TIMEOUT_S))
    except ValueError:
        return BUSY_TIMEOUT_S
    return value if math.isfinite(value) and value >= 0 else BUSY_TIMEOUT_S


def now_iso() -> str:
    """Current UTC time as ISO-8601 text (the only timestamp format in state)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``.

    Every way the file can be unusable is a typed error: a corrupt file is moved aside (so the
    next command starts clean) and named, a newer schema asks for an upgrade, a lock held past
    the busy timeout names its holder.
    """
    ensure_home(path.parent)
    try:
        # check_same_thread=False: `jobs`/`status` refresh hosts in worker threads, and
        # providers read state (hosts, recorded instances) from there; SQLite serializes.
        db = sqlite3.connect(
            path, timeout=busy_timeout_s(), isolation_level=None, check_same_thread=False
        )
        db.row_factory = sqlite3.Row
        _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        _migrate(db, path)
    except sqlite3.Error as exc:
        raise typed_error(exc, path, move_corrupt=True) from None
    return db


def ensure_home(home: Path) -> None:
    """RUNCTL_HOME is (or can be created as) a writable directory; else a typed error."""
    here = home
    while not here.exists() and not here.is_symlink() and here != here.parent:
        here = here.parent  # the nearest existing ancestor decides whether we can create it
    where = f"RUNCTL_HOME {home}" if here == home else f"{here} (parent of RUNCTL_HOME {home})"
    if not here.is_dir():
        raise FileSystemError(
            f"{where} is not a directory",
            hint="remove or rename that file, or set RUNCTL_HOME to a directory",
        )
    if not os.access(here, os.W_OK | os.X_OK):
        raise FileSystemError(
            f"{where} is not writable",
            hint=f"fix its permissions (chmod u+rwx {here}) or set RUNCTL_HOME elsewhere",
        )
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise FileSystemError(
            f"cannot create RUNCTL_HOME {home}: {exc.strerror}",
            hint="set RUNCTL_HOME to a writable directory",
        ) from None


def _disk_full(directory: Path) -> bool:
    # SQLite reports a full disk while growing its WAL index as a plain "disk I/O error".
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail == 0 or (stat.f_favail == 0 and stat.f_files > 0)


def default_path() -> Path:
    from runctl.config import home

    return home() / "state.db"


def typed_error(
    exc: sqlite3.Error, path: Path | None, *, move_corrupt: bool = False
) -> RunctlError:
    """The user-facing error for a failed SQLite call on the state database at ``path``."""
    path = path or default_path()
    text = str(exc)
    low = text.lower()
    if isinstance(exc, StateErrorSignal):
        return StateError(text, hint=exc.hint)
    if "locked" in low or "busy" in low:
        holders = lock_holders(path)
        who = f" (held by pid {', '.join(map(str, holders))})" if holders else ""
        return StateError(
            f"state database {path} is locked by another process{who} for more than "
            f"{busy_timeout_s():g} s",
            hint="wait for that runctl command to finish, or stop it; `runctl doctor` checks "
            "the database",
        )
    if "full" in low or ("disk i/o" in low and _disk_full(path.parent)):
        return FileSystemError(
            f"no space left on device for the state database {path}",
            hint="free some space (e.g. `runctl jobs prune`) and retry",
        )
    if "readonly" in low or "unable to open" in low or "disk i/o" in low:
        return FileSystemError(
            f"cannot write the state database {path}: {text}",
            hint=f"check that {path.parent} and {path.name} are writable and the disk is healthy",
        )
    if isinstance(exc, sqlite3.DatabaseError):
        # Not a database, a malformed image, or tables that are not ours: unusable as is.
        moved = move_aside(path) if move_corrupt else None
        where = f"; moved it to {moved}" if moved else ""
        return StateError(f"state database {path} is corrupt ({text}){where}", hint=DOCTOR_HINT)
    return StateError(f"state database {path}: {text}", hint=DOCTOR_HINT)


class StateErrorSignal(sqlite3.DatabaseError):
    """Raised inside connect for a readable database we must not use (newer schema)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def move_aside(path: Path) -> Path | None:
    """Rename a corrupt ``state.db`` (and its WAL files) to ``state.db.corrupt-<time>``."""
    if not path.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        path.rename(backup)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(backup.with_name(backup.name + suffix))
    except OSError:
        return None
    return backup


def lock_holders(path: Path) -> list[int]:
    """Pids holding a write lock on the database or its WAL index (Linux /proc/locks)."""
    inodes = set()
    for name in (path.name, path.name + "-shm", path.name + "-wal"):
        with suppress(OSError):
            inodes.add(os.stat(path.with_name(name)).st_ino)
    try:
        with open("/proc/locks") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    pids: set[int] = set()
    for line in lines:
        # "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters are shown as "1: -> ..."
        parts = line.split()
        if len(parts) < 6 or "->" in parts or parts[3] != "WRITE":
            continue
        try:
            pid, inode = int(parts[4]), int(parts[5].rsplit(":", 1)[1])
        except ValueError:
            continue
        if inode in inodes and pid > 0 and pid != os.getpid():
            pids.add(pid)
    return sorted(pids)


def _retry_locked(fn: object) -> None:
    # Switching to WAL needs a brief exclusive lock; a burst of new processes can collide on a
    # fresh file before busy_timeout applies to that pragma, so retry a few times.
    assert callable(fn)
    for attempt in range(50):
        try:
            fn()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.02 * (attempt + 1))


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one write transaction (taken up front, so it never deadlocks)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS _runctl_migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    done = {r[0] for r in db.execute("SELECT name FROM _runctl_migrations")}
    unknown = sorted(done - {m.__name__ for m in MIGRATIONS})
    if unknown:
        # Written by a newer runctl: its schema may mean things this version would corrupt.
        raise StateErrorSignal(
            f"state database {path} was written by a newer runctl (schema {unknown[-1]})",
            hint="upgrade runctl, or set RUNCTL_HOME to another directory for this version",
        )
    if all(m.__name__ in done for m in MIGRATIONS):
        return
    with transaction(db):
        # Re-read inside the lock: another process may have migrated meanwhile.
        done = {r[0] for r in db.execute("SELECT name FROM _runctl_migrations")}
        for migration in MIGRATIONS:
            if migration.__name__ not in done:
                migration(db)
                db.execute(
                    "INSERT INTO _runctl_migrations VALUES (?, ?)",
                    (migration.__name__, now_iso()),
                )
