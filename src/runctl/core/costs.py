"""What instances cost: recorded state intervals x the hourly price captured at launch.

Every state change of an instance is stored with its timestamp (``Store.instance_history``).
An interval in a billed state (``running`` or ``pending``) costs the full ``hourly_usd`` for
its length; the last interval runs until ``now``. Time in ``stopped`` costs storage only:
the recorded disk size (``data.storage_gb``) x the provider's published storage rate
(``STORAGE_USD_PER_GB_MONTH``, labelled as such in every output); with no recorded size the
storage cost is reported as unknown (``storage_known`` false), never guessed. Registered SSH
hosts only show their ``$/h``; nothing is accumulated for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runctl.models import InstanceState
from runctl.state.store import Store

BILLED_STATES = frozenset({InstanceState.RUNNING.value, InstanceState.PENDING.value})
STORAGE_STATES = frozenset({InstanceState.STOPPED.value, InstanceState.STOPPING.value})
HOURS_PER_MONTH = 730.0
#: provider -> (USD per GB-month of disk kept while stopped, where the number comes from)
STORAGE_USD_PER_GB_MONTH: dict[str, tuple[float, str]] = {
    "aws": (0.08, "EBS gp3 list price, us-east-1, 2026-11"),
    "runpod": (0.20, "RunPod volume disk of a stopped pod, runpod.io/pricing, 2026-11"),
}


@dataclass(frozen=True)
class InstanceCost:
    resource_id: int
    provider: str
    instance_id: str
    name: str
    state: str
    hourly_usd: float | None
    total_usd: float  # since launch
    today_usd: float  # since midnight UTC
    billed_s: float
    storage_usd: float = 0.0  # disk billed while stopped (see STORAGE_USD_PER_GB_MONTH)
    storage_known: bool = True  # False: stopped time with no recorded disk size
    stopped_s: float = 0.0


@dataclass(frozen=True)
class CostSummary:
    at: str
    hourly_burn_usd: float  # sum of $/h over instances in a billed state now
    today_usd: float
    total_usd: float
    daily_budget_usd: float | None  # None: no budget configured
    instances: list[InstanceCost] = field(default_factory=list)

    @property
    def is_over_budget(self) -> bool:
        return self.daily_budget_usd is not None and self.today_usd > self.daily_budget_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "hourly_burn_usd": round(self.hourly_burn_usd, 4),
            "today_usd": round(self.today_usd, 4),
            "total_usd": round(self.total_usd, 4),
            "daily_budget_usd": self.daily_budget_usd,
            "over_budget": self.is_over_budget,
        }


def parse_iso(text: str) -> datetime:
    """A stored UTC timestamp ("...Z" or with an offset) as an aware datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def start_of_day(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def billed_seconds(
    history: Sequence[tuple[str, str]],
    now: datetime,
    *,
    since: datetime | None = None,
    states: frozenset[str] = BILLED_STATES,
) -> float:
    """Seconds spent in ``states`` (billed ones by default), counting only time after ``since``."""
    total = 0.0
    for i, (state, at) in enumerate(history):
        if state not in states:
            continue
        start = parse_iso(at)
        end = parse_iso(history[i + 1][1]) if i + 1 < len(history) else now
        if since is not None:
            start = max(start, since)
        end = min(end, now)
        if end > start:
            total += (end - start).total_seconds()
    return total


def instance_cost(
    record: dict[str, Any], history: Sequence[tuple[str, str]], now: datetime
) -> InstanceCost:
    """Cost of one recorded instance (a ``Store.list_instance_records`` row)."""
    day = start_of_day(now)
    spans = (
        billed_seconds(history, now),
        billed_seconds(history, now, since=day),
        billed_seconds(history, now, states=STORAGE_STATES),
        billed_seconds(history, now, since=day, states=STORAGE_STATES),
    )
    return cost_of(record, spans)


def recorded_costs(store: Store, now: datetime) -> list[tuple[dict[str, Any], InstanceCost]]:
    """Every recorded instance with its cost: the state history is summed in one SQL query
    (``Store.state_seconds``), so this stays flat as the history grows."""
    moment = now.astimezone(UTC).isoformat()
    day = start_of_day(now).isoformat()
    spans = store.state_seconds(moment, day, BILLED_STATES, STORAGE_STATES)
    return [
        (rec, cost_of(rec, spans.get(int(rec["resource_id"]), (0.0, 0.0, 0.0, 0.0))))
        for rec in store.list_instance_records()
    ]


def cost_of(record: dict[str, Any], spans: tuple[float, float, float, float]) -> InstanceCost:
    """Cost of a recorded instance from its seconds billed (total, today) and stopped
    (total, today)."""
    hourly = record.get("hourly_usd")
    billed, today, stopped, stopped_today = spans
    price = float(hourly) if hourly is not None else 0.0
    storage_hourly = storage_usd_per_hour(record)
    storage_known = stopped == 0 or storage_hourly is not None
    disk = storage_hourly or 0.0
    return InstanceCost(
        resource_id=int(record["resource_id"]),
        provider=record["provider"],
        instance_id=record["instance_id"],
        name=record["name"],
        state=record["state"],
        hourly_usd=float(hourly) if hourly is not None else None,
        total_usd=price * billed / 3600.0 + disk * stopped / 3600.0,
        today_usd=price * today / 3600.0 + disk * stopped_today / 3600.0,
        billed_s=billed,
        storage_usd=disk * stopped / 3600.0,
        storage_known=storage_known,
        stopped_s=stopped,
    )


def storage_usd_per_hour(record: dict[str, Any]) -> float | None:
    """What the instance's disks cost per hour while stopped; None when size or rate unknown."""
    rate = STORAGE_USD_PER_GB_MONTH.get(str(record.get("provider")))
    size = (record.get("data") or {}).get("storage_gb")
    if rate is None or size is None:
        return None
    return float(size) * rate[0] / HOURS_PER_MONTH


def summarize(
    store: Store, *, daily_budget_usd: float = 0.0, now: datetime | None = None
) -> CostSummary:
    """Costs of every recorded instance, the current hourly burn and today's spend."""
    moment = now or datetime.now(UTC)
    costs = [cost for _, cost in recorded_costs(store, moment)]
    burn = sum(c.hourly_usd or 0.0 for c in costs if c.state in BILLED_STATES)
    return CostSummary(
        at=moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        hourly_burn_usd=burn,
        today_usd=sum(c.today_usd for c in costs),
        total_usd=sum(c.total_usd for c in costs),
        daily_budget_usd=daily_budget_usd if daily_budget_usd > 0 else None,
        instances=costs,
    )


def elapsed_s(start: str | None, end: str | None, now: datetime) -> float | None:
    """Seconds between two stored timestamps (``end`` None: until ``now``)."""
    if not start:
        return None
    stop = parse_iso(end) if end else now
    return max(0.0, (stop - parse_iso(start)).total_seconds())
