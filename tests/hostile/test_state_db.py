"""A state database that is corrupt, foreign, from the future or locked: typed errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, job_id_of
from tests.hostile.conftest import assert_final_job_answers_fast, assert_typed


def _make_db(cli: CLI, home: Path) -> Path:
    assert cli("jobs").returncode == 0
    return home / "state.db"


@pytest.mark.parametrize(
    "content",
    [b"garbage, not a database\n" * 100, b"SQLite format 3\0" + b"\xff" * 8000],
    ids=["garbage", "bad-header"],
)
def test_corrupt_state_db_is_moved_aside_and_named(
    cli: CLI, runctl_home: Path, content: bytes
) -> None:
    runctl_home.mkdir(parents=True)
    (runctl_home / "state.db").write_bytes(content)
    done = cli("jobs")
    assert_typed(done, 10, str(runctl_home / "state.db"), "corrupt", "runctl doctor")
    [backup] = runctl_home.glob("state.db.corrupt-*")
    assert backup.read_bytes() == content and backup.name in done.stderr
    # The next command starts from a fresh index instead of failing forever.
    assert cli("jobs").returncode == 0


def test_truncated_state_db_is_corrupt_not_a_bug(
    cli: CLI, runctl_home: Path, project: Path
) -> None:
    job_id_of(cli("run", "hello.py", cwd=project))
    db = runctl_home / "state.db"
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    for side in ("state.db-wal", "state.db-shm"):
        (runctl_home / side).unlink(missing_ok=True)
    done = cli("jobs")
    assert done.returncode in (0, 10), done.stderr
    if done.returncode == 10:
        assert_typed(done, 10, "corrupt")


def test_emptied_state_db_starts_fresh_and_doctor_reindexes(
    cli: CLI, runctl_home: Path, project: Path
) -> None:
    job = job_id_of(cli("run", "hello.py", cwd=project))
    assert cli("wait", job).returncode == 0
    for name in ("state.db-wal", "state.db-shm"):
        (runctl_home / name).unlink(missing_ok=True)
    (runctl_home / "state.db").write_bytes(b"")
    assert cli("jobs", "--json").stdout.strip() == "[]"  # an empty file is a fresh index
    checked = cli("doctor")
    assert "1 local job dir(s) not in the index" in checked.stdout, checked.stdout
    assert cli("doctor", "--fix").returncode == 0
    [row] = json.loads(cli("jobs", "--json").stdout)
    assert row["job_id"] == job and row["state"] == "succeeded"


def test_a_foreign_sqlite_file_is_not_taken_for_ours(cli: CLI, runctl_home: Path) -> None:
    runctl_home.mkdir(parents=True)
    db = sqlite3.connect(runctl_home / "state.db")
    db.execute("CREATE TABLE jobs (x)")
    db.commit()
    db.close()
    assert_typed(cli("jobs"), 10, "state.db")


def test_state_db_from_a_newer_runctl_asks_for_an_upgrade(cli: CLI, runctl_home: Path) -> None:
    db = sqlite3.connect(_make_db(cli, runctl_home))
    db.execute("INSERT INTO _runctl_migrations VALUES ('m999_from_the_future', 'x')")
    db.commit()
    db.close()
    done = cli("jobs", "--json")
    assert_typed(done, 10, "newer runctl", "upgrade")
    assert '"exit_code": 10' in done.stdout
    assert not list(runctl_home.glob("state.db.corrupt-*")), "a newer DB is not corrupt"


def test_locked_state_db_names_the_holder(cli: CLI, runctl_home: Path, project: Path) -> None:
    finished = job_id_of(cli("run", "hello.py", cwd=project))
    assert cli("wait", finished).returncode == 0
    db = runctl_home / "state.db"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"db = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
         "db.execute('BEGIN EXCLUSIVE')\n"
         "db.execute(\"INSERT INTO events (at, kind, subject) VALUES ('x', 'hold', 'x')\")\n"
         "print('held', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        done = cli("run", "hello.py", cwd=project, env={"RUNCTL_DB_TIMEOUT_S": "1"})
        assert time.monotonic() - started < 10
        assert_typed(done, 10, "locked", f"pid {holder.pid}")
        # Reading about a finished job needs no write lock: it still answers, fast.
        assert_final_job_answers_fast(cli, finished, env={"RUNCTL_DB_TIMEOUT_S": "1"})
        assert cli("status", finished).returncode == 0
    finally:
        holder.kill()
        holder.communicate()
    # Once the holder is gone, the same command works and leaves exactly one job.
    assert cli("run", "hello.py", cwd=project).returncode == 0


def test_runctl_home_that_is_a_file(cli: CLI, runctl_home: Path) -> None:
    runctl_home.parent.mkdir(parents=True, exist_ok=True)
    runctl_home.write_text("oops")
    assert_typed(cli("jobs"), 11, "RUNCTL_HOME", "not a directory")


def test_runctl_home_on_a_read_only_filesystem(
    cli: CLI, tmpfs: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    ro = tmpfs("ro", ro=True)  # type: ignore[operator]
    monkeypatch.setenv("RUNCTL_HOME", str(ro / "home"))
    assert_typed(cli("jobs"), 11, "RUNCTL_HOME", str(ro / "home"))
    monkeypatch.setenv("RUNCTL_HOME", str(ro))
    assert_typed(cli("jobs"), 11, "not writable")
