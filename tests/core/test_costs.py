"""Cost accounting from recorded state intervals, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from runctl.core import costs
from runctl.models import Instance, InstanceState
from runctl.state.store import Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "state.db")


def _add(
    store: Store, instance_id: str, hourly: float | None, history: list[tuple[str, str]]
) -> int:
    """Record an instance and replace its state history with fixed timestamps."""
    rid = store.record_instance(
        Instance(provider="aws", instance_id=instance_id, name=instance_id,
                 state=InstanceState(history[-1][0]), hourly_usd=hourly)
    )  # fmt: skip
    store.db.execute("DELETE FROM instance_states WHERE resource_id = ?", (rid,))
    for state, at in history:
        store.db.execute(
            "INSERT INTO instance_states (resource_id, state, at) VALUES (?, ?, ?)",
            (rid, state, at),
        )
    return rid


def test_billed_seconds_counts_running_and_pending_until_now() -> None:
    history = [
        ("pending", "2026-11-23T08:00:00.000Z"),
        ("running", "2026-11-23T08:30:00.000Z"),
        ("stopped", "2026-11-23T09:00:00.000Z"),
        ("running", "2026-11-23T11:00:00Z"),
    ]
    assert costs.billed_seconds(history, NOW) == 3600 + 3600


def test_today_is_clipped_at_midnight_utc() -> None:
    history = [("running", "2026-11-22T22:00:00.000Z")]
    day = costs.start_of_day(NOW)
    assert costs.billed_seconds(history, NOW) == 14 * 3600
    assert costs.billed_seconds(history, NOW, since=day) == 12 * 3600


def test_summary_burn_today_total_and_budget(store: Store) -> None:
    _add(store, "i-run", 2.0, [("pending", "2026-11-22T23:00:00Z"),
                                ("running", "2026-11-23T00:00:00Z")])  # fmt: skip
    _add(store, "i-stop", 1.0, [("running", "2026-11-23T06:00:00Z"),
                                 ("stopped", "2026-11-23T09:00:00Z")])  # fmt: skip
    _add(store, "i-gone", 4.0, [("running", "2026-11-21T00:00:00Z"),
                                 ("terminated", "2026-11-21T01:00:00Z")])  # fmt: skip
    _add(store, "i-free", None, [("running", "2026-11-23T10:00:00Z")])
    summary = costs.summarize(store, daily_budget_usd=20.0, now=NOW)
    by_id = {c.instance_id: c for c in summary.instances}
    assert by_id["i-run"].total_usd == pytest.approx(26.0)  # 13 h x $2
    assert by_id["i-run"].today_usd == pytest.approx(24.0)
    assert by_id["i-stop"].total_usd == pytest.approx(3.0)  # stopped costs nothing
    assert by_id["i-gone"].total_usd == pytest.approx(4.0)
    assert by_id["i-gone"].today_usd == 0
    assert by_id["i-free"].total_usd == 0 and by_id["i-free"].hourly_usd is None
    assert summary.hourly_burn_usd == pytest.approx(2.0)  # only instances billed now
    assert summary.today_usd == pytest.approx(27.0)
    assert summary.total_usd == pytest.approx(33.0)
    assert summary.daily_budget_usd == 20.0 and summary.is_over_budget
    assert summary.to_json()["over_budget"] is True


def test_no_budget_and_empty_state(store: Store) -> None:
    summary = costs.summarize(store, now=NOW)
    assert summary.daily_budget_usd is None and not summary.is_over_budget
    assert (summary.hourly_burn_usd, summary.today_usd, summary.total_usd) == (0, 0, 0)


def test_elapsed_s() -> None:
    assert costs.elapsed_s(None, None, NOW) is None
    assert costs.elapsed_s("2026-11-23T11:59:00Z", None, NOW) == 60
    assert costs.elapsed_s("2026-11-23T10:00:00Z", "2026-11-23T10:00:30.500Z", NOW) == 30.5
