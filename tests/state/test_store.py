"""State database: migrations, job lookup, and many CLI processes writing at once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from runctl.errors import NotFoundError, UsageError
from runctl.models import Job, JobState
from runctl.state.db import connect, now_iso
from runctl.state.migrations import MIGRATIONS
from runctl.state.store import Store
from tests.conftest import CLI


def _job(job_id: str) -> Job:
    return Job(job_id=job_id, name="n", project="p", provider="local", instance_id="local",
               state=JobState.SUBMITTING, argv=("a.py",), job_dir="/j", workdir="/w",
               checkpoint_dir="/c", created_at=now_iso())  # fmt: skip


def test_migrations_run_once_and_wal_is_on(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    connect(path).close()
    db = connect(path)
    names = [r[0] for r in db.execute("SELECT name FROM _runctl_migrations")]
    assert names == [m.__name__ for m in MIGRATIONS]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_job_prefix_lookup_and_bad_ids(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    store.insert_job(_job("train-aaaaaa"))
    store.insert_job(_job("train-aaabbb"))
    assert store.get_job("train-aaab").job_id == "train-aaabbb"
    with pytest.raises(UsageError, match="ambiguous"):
        store.get_job("train-aaa")
    with pytest.raises(NotFoundError):
        store.get_job("zzz")
    for bad in ("../x", "a b", "", "x;rm", "%"):
        with pytest.raises(UsageError):
            store.get_job(bad)


def test_state_changes_are_events(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    store.insert_job(_job("j-1"))
    store.update_job("j-1", state=JobState.RUNNING)
    store.update_job("j-1", state=JobState.SUCCEEDED, exit_code=0)
    kinds = [(e["kind"], e["data"].get("to")) for e in store.list_events("j-1")]
    assert kinds == [("job.submitted", None), ("job.state", "running"),
                     ("job.state", "succeeded")]  # fmt: skip


_WRITER = """
import sys
from pathlib import Path
from runctl.models import Job, JobState
from runctl.state.store import Store
from runctl.state.db import now_iso
store = Store.open(Path(sys.argv[1]))
for i in range(25):
    jid = f"w{sys.argv[2]}-{i}"
    store.insert_job(Job(job_id=jid, name="n", project="p", provider="local",
        instance_id="local", state=JobState.SUBMITTING, argv=("a",), job_dir="/j",
        workdir="/w", checkpoint_dir="/c", created_at=now_iso()))
    store.update_job(jid, state=JobState.RUNNING)
    store.add_event("test", jid, {})
"""


def test_twenty_concurrent_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"  # created by the racing processes themselves
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(n)],
                              stderr=subprocess.PIPE, text=True) for n in range(20)]  # fmt: skip
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0] == 500
    assert db.execute("SELECT COUNT(*) FROM events WHERE kind = 'test'").fetchone()[0] == 500


def test_twenty_concurrent_cli_submits(cli: CLI, project: Path) -> None:
    procs = [cli.popen("run", "hello.py", "--", str(n), cwd=project) for n in range(20)]
    results = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    ids = {out.strip() for out, _ in results}
    assert len(ids) == 20
    listed = json.loads(cli("jobs", "--limit", "50", "--json").stdout)
    assert {j["job_id"] for j in listed} == ids
    for job in ids:
        assert cli("wait", job).returncode == 0


def test_instance_records_keep_state_history(tmp_path: Path) -> None:
    from runctl.models import Instance, InstanceState

    store = Store.open(tmp_path / "s.db")
    inst = Instance(provider="aws", instance_id="i-0abc", name="runctl-x", hourly_usd=0.5,
                    state=InstanceState.PENDING, tags={"runctl:managed": "true"})  # fmt: skip
    rid = store.record_instance(inst, spot=True)
    assert store.record_instance(inst) == rid  # same state: no new history row
    import dataclasses

    store.record_instance(dataclasses.replace(inst, state=InstanceState.RUNNING,
                                              hourly_usd=None))  # fmt: skip
    record = store.get_instance_record("aws", "i-0abc")
    assert record is not None
    assert record["hourly_usd"] == 0.5 and record["spot"] and record["state"] == "running"
    assert [s for s, _ in store.instance_history(rid)] == ["pending", "running"]
    assert [r["instance_id"] for r in store.list_instance_records("aws")] == ["i-0abc"]
