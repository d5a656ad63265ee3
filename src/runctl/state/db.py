"""Open the state database: WAL mode, a busy timeout for concurrent CLIs, migrations on connect.

Many ``runctl`` processes may run at once (a follow in one terminal, submits from a script),
so every write happens in a short ``BEGIN IMMEDIATE`` transaction and readers never block
writers (WAL). No network call ever happens inside a transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from runctl.state.migrations import MIGRATIONS

BUSY_TIMEOUT_S = 30.0


def now_iso() -> str:
    """Current UTC time as ISO-8601 text (the only timestamp format in state)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: `jobs`/`status` refresh hosts in worker threads, and providers
    # read state (hosts, recorded instances) from there; SQLite itself serializes access.
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    db.row_factory = sqlite3.Row
    _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    _migrate(db)
    return db


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


def _migrate(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS _runctl_migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    done = {r[0] for r in db.execute("SELECT name FROM _runctl_migrations")}
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
