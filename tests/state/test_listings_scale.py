"""Listings stay flat as history grows (issue 21) and still say the same things.

Costs are summed by one SQL query over all state history instead of a Python pass per
instance; `events -n` and the budget check read by index with limits; `resources list` shows
the 50 costliest rows by default with a line saying how many more; `status` collapses
warnings that differ only in the machine they name. These tests pin the answers, not times
(bench/listings.py measures those).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runctl.core import costs
from runctl.state.db import transaction
from runctl.state.store import Store
from tests.conftest import CLI

NOW = datetime(2026, 12, 8, 15, 30, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instance(
    store: Store,
    rid: int,
    history: list[tuple[str, datetime]],
    *,
    provider: str = "aws",
    hourly: float | None = 1.0,
    data: dict[str, object] | None = None,
) -> None:
    """An instance with exactly this state history, written as the store would keep it."""
    state = history[-1][0] if history else "running"
    created = _iso(history[0][1]) if history else _iso(NOW)
    with transaction(store.db):
        store.db.execute(
            "INSERT INTO instances (resource_id, provider, instance_id, name, state,"
            " hourly_usd, spot, tags, data, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, '{}', ?, ?, ?)",
            (rid, provider, f"i-{rid:04d}", f"runctl-{rid}", state, hourly,
             json.dumps(data or {}), created, created),
        )  # fmt: skip
        store.db.executemany(
            "INSERT INTO instance_states (resource_id, state, at) VALUES (?, ?, ?)",
            [(rid, s, _iso(at)) for s, at in history],
        )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "state.db")


def test_costs_summed_in_sql_match_the_per_instance_history_walk(store: Store) -> None:
    day = NOW.replace(hour=0, minute=30)
    h = timedelta(hours=1)
    _instance(store, 1, [("pending", day - 30 * h), ("running", day - 29 * h)])  # still running
    _instance(store, 2, [("pending", day - 5 * h), ("running", day - 4 * h),
                         ("stopping", day + h), ("stopped", day + 2 * h)],
              data={"storage_gb": 100})  # fmt: skip
    _instance(store, 3, [("running", day + 3 * h), ("stopped", day + 4 * h),
                         ("running", day + 5 * h), ("terminated", day + 6 * h)])  # fmt: skip
    _instance(store, 4, [("running", day - 2 * h), ("stopped", day - h)], hourly=None)
    _instance(store, 5, [("running", NOW + h)])  # recorded after the moment asked about
    _instance(store, 6, [], provider="runpod")  # no history at all
    _instance(store, 7, [("pending", day + h), ("running", day + h + timedelta(seconds=0.25))])

    sql = {c.resource_id: c for _, c in costs.recorded_costs(store, NOW)}
    for record in store.list_instance_records():
        history = store.instance_history(int(record["resource_id"]))
        walked = costs.instance_cost(record, history, NOW)
        summed = sql[walked.resource_id]
        for field in ("billed_s", "stopped_s", "total_usd", "today_usd", "storage_usd"):
            assert getattr(summed, field) == pytest.approx(getattr(walked, field), abs=1e-3), (
                walked.resource_id,
                field,
            )
        assert (summed.storage_known, summed.state) == (walked.storage_known, walked.state)
    assert sql[1].billed_s == pytest.approx((NOW - (day - 30 * h)).total_seconds())  # pending too
    assert sql[5].billed_s == 0 and sql[6].total_usd == 0


def test_upgraded_state_gets_the_listing_indexes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store.open(path).db.close()
    with sqlite3.connect(path) as db:  # as an older runctl left it: no listing indexes yet
        for name in ("jobs_by_created", "instance_states_by_resource"):
            db.execute(f"DROP INDEX {name}")
        db.execute("DELETE FROM _runctl_migrations WHERE name = 'm002_listing_indexes'")
    store = Store.open(path)
    names = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"jobs_by_created", "instance_states_by_resource"} <= names
    plan = " ".join(
        str(r[-1])
        for r in store.db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT 20"
        )
    )
    assert "jobs_by_created" in plan and "TEMP B-TREE" not in plan


def test_events_newest_n_by_subject_and_kind(cli: CLI, project: Path, runctl_home: Path) -> None:
    store = Store.open(runctl_home / "state.db")
    for i in range(30):
        store.add_event("job.state" if i % 2 else "watchdog.armed", f"s{i % 3}", {"i": i})
    every = json.loads(cli("--json", "events", "-n", "1000").stdout)
    assert [e["data"]["i"] for e in every] == list(range(30))  # oldest first
    last = json.loads(cli("--json", "events", "-n", "4").stdout)
    assert [e["data"]["i"] for e in last] == [26, 27, 28, 29]
    of_s1 = json.loads(cli("--json", "events", "s1", "-n", "3").stdout)
    assert [e["data"]["i"] for e in of_s1] == [22, 25, 28]
    kind = json.loads(cli("--json", "events", "s1", "--kind", "job.", "-n", "2").stdout)
    assert [e["data"]["i"] for e in kind] == [25, 19][::-1]
    text = cli("events", "-n", "2")
    assert text.returncode == 0 and len(text.stdout.strip().splitlines()) == 3  # header + 2
    # a subject with events, none of that kind: an empty answer; an unknown one: not found
    none_of_kind = cli("events", "s1", "--kind", "recover.")
    assert none_of_kind.returncode == 0 and "no events" in none_of_kind.stdout
    unknown = cli("events", "nobody")
    assert unknown.returncode != 0 and "no events for nobody" in unknown.stderr


def test_resources_list_shows_the_costliest_50_and_says_how_many_more(
    cli: CLI, runctl_home: Path
) -> None:
    store = Store.open(runctl_home / "state.db")
    start = datetime.now(UTC) - timedelta(hours=2)
    for rid in range(1, 61):
        _instance(store, rid, [("running", start)], hourly=rid / 10)
    shown = cli("resources", "list", "--no-refresh")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    rows = [line for line in lines if line.startswith("aws:")]
    assert len(rows) == 50 and rows[0].startswith("aws:i-0060")  # costliest first
    assert "… 10 more; --limit 60 shows all" in lines
    assert lines[-1].startswith("60 instance(s): $183.00/h now")  # totals over all of them
    everything = json.loads(cli("--json", "resources", "list", "--no-refresh").stdout)
    assert len(everything) == 60
    asked = cli("resources", "list", "--no-refresh", "--limit", "55").stdout
    assert sum(line.startswith("aws:") for line in asked.splitlines()) == 55
    assert "more; --limit" not in asked


def test_status_collapses_warnings_alike_and_json_keeps_them_all(
    cli: CLI, runctl_home: Path
) -> None:
    store = Store.open(runctl_home / "state.db")
    start = datetime.now(UTC) - timedelta(hours=30)
    for rid in range(1, 9):  # 8 machines over both the hours and the dollars thresholds
        _instance(store, rid, [("running", start)], hourly=2.0)
    _instance(store, 9, [("running", start), ("stopped", start + timedelta(hours=1))])
    text = cli("status")
    assert text.returncode == 0, text.stderr
    warnings = [line for line in text.stdout.splitlines() if line.startswith("warning:")]
    assert sum("has run" in w for w in warnings) == 3
    assert sum("has cost" in w for w in warnings) == 3
    assert sum("5 more like this" in w for w in warnings) == 2
    assert sum("disk size unknown" in w for w in warnings) == 1  # one alone stays as it was
    data = json.loads(cli("--json", "status").stdout)
    assert len(data["costs"]["warnings"]) == 17
    # `resources summary` still lists each one
    full = cli("resources", "summary", "--no-refresh").stdout
    assert sum(line.startswith("warning:") for line in full.splitlines()) == 17


def test_job_budgets_are_checked_for_unfinished_jobs_only(
    cli: CLI, project: Path, runctl_home: Path
) -> None:
    from dataclasses import replace

    from runctl import config
    from runctl.core import budget
    from runctl.models import JobState
    from runctl.runtime import Runtime

    (project / "quick.py").write_text("print('done')\n")
    done = cli("run", "--wait", "--budget", "5", "quick.py", cwd=project)
    assert done.returncode == 0, done.stderr
    rt = Runtime(config=config.load(), home=runctl_home)
    finished = done.stdout.strip().splitlines()[-1]
    live = rt.store.get_job(finished)
    twin = replace(live, job_id=f"{finished}-live", state=JobState.RUNNING)
    rt.store.insert_job(twin)
    scopes = [c.scope for c in budget.check(rt, NOW)]
    assert scopes == [f"job:{twin.job_id}"]
