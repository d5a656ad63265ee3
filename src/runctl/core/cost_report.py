"""Cost rows for ``resources list`` and their exports: CSV, JSON and a standalone HTML page.

The HTML page has no scripts and loads nothing: its charts are inline SVG drawn here — the
accumulated cost over time (all instances) and the accumulated cost per instance.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from runctl.core import costs
from runctl.state.store import Store

COLUMNS = (
    "provider",
    "instance_id",
    "name",
    "state",
    "spot",
    "hourly_usd",
    "hours",
    "total_usd",
    "today_usd",
    "storage_usd",
    "project",
    "user",
    "created_at",
)


def rows(store: Store, now: datetime) -> list[dict[str, Any]]:
    """One row per recorded instance, with its accumulated cost."""
    out = []
    for record, cost in costs.recorded_costs(store, now):
        tags = record.get("tags") or {}
        out.append(
            {
                "provider": cost.provider,
                "instance_id": cost.instance_id,
                "name": cost.name,
                "state": cost.state,
                "spot": bool(record.get("spot")),
                "hourly_usd": cost.hourly_usd,
                "price_known": cost.hourly_usd is not None,
                "hours": round(cost.billed_s / 3600.0, 3),
                "total_usd": round(cost.total_usd, 4),
                "today_usd": round(cost.today_usd, 4),
                "storage_usd": round(cost.storage_usd, 4),
                "storage_known": cost.storage_known,
                "project": tags.get("runctl:project", ""),
                "user": tags.get("runctl:user", ""),
                "protected": tags.get("runctl:protected", "").lower() == "true",
                "created_at": record.get("created_at", ""),
                "age_s": costs.elapsed_s(record.get("created_at"), None, now),
            }
        )
    return out


def to_csv(items: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in items:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    return buffer.getvalue()


def cumulative_series(
    store: Store, now: datetime, points: int = 48
) -> list[tuple[datetime, float]]:
    """Total accumulated cost of all recorded instances at ``points`` moments up to now."""
    records = store.list_instance_records()
    if not records:
        return []
    histories = [(r, store.instance_history(int(r["resource_id"]))) for r in records]
    starts = [costs.parse_iso(h[0][1]) for _, h in histories if h]
    begin = min(starts) if starts else now
    span = max((now - begin).total_seconds(), 1.0)
    series = []
    for i in range(points + 1):
        moment = begin + timedelta(seconds=span * i / points)
        total = sum(costs.instance_cost(r, h, moment).total_usd for r, h in histories if h)
        series.append((moment, total))
    return series


def _line_chart(series: Sequence[tuple[datetime, float]], width: int, height: int) -> str:
    pad = 50
    top = max((v for _, v in series), default=0.0) or 1.0
    n = max(len(series) - 1, 1)
    pts = " ".join(
        f"{pad + (width - 2 * pad) * i / n:.1f},{height - pad - (height - 2 * pad) * v / top:.1f}"
        for i, (_, v) in enumerate(series)
    )
    first = series[0][0].strftime("%Y-%m-%d %H:%M") if series else ""
    last = series[-1][0].strftime("%Y-%m-%d %H:%M") if series else ""
    return (
        f'<svg id="cost-over-time" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="accumulated cost over time">'
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#333"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>'
        f'<polyline points="{pts}" fill="none" stroke="#d9480f" stroke-width="3"/>'
        f'<text x="{pad}" y="{pad - 10}" font-size="12">${top:.2f}</text>'
        f'<text x="{pad}" y="{height - pad + 18}" font-size="12">{first}</text>'
        f'<text x="{width - pad}" y="{height - pad + 18}" font-size="12" '
        f'text-anchor="end">{last}</text></svg>'
    )


def _bar_chart(items: Sequence[dict[str, Any]], width: int) -> str:
    bar, gap, label = 22, 8, 260
    shown = sorted(items, key=lambda r: r["total_usd"], reverse=True)[:30]
    height = max(len(shown), 1) * (bar + gap) + 20
    top = max((r["total_usd"] for r in shown), default=0.0) or 1.0
    parts = [
        f'<svg id="cost-per-instance" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="accumulated cost per instance">'
    ]
    for i, row in enumerate(shown):
        y = 10 + i * (bar + gap)
        w = max((width - label - 80) * row["total_usd"] / top, 1.0)
        name = html.escape(f"{row['provider']}:{row['instance_id']}")
        parts.append(
            f'<text x="0" y="{y + 16}" font-size="12">{name}</text>'
            f'<rect class="bar" x="{label}" y="{y}" width="{w:.1f}" height="{bar}" '
            'fill="#1971c2"/>'
            f'<text x="{label + w + 6:.1f}" y="{y + 16}" font-size="12">'
            f"${row['total_usd']:.2f}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def to_html(
    items: Sequence[dict[str, Any]],
    series: Sequence[tuple[datetime, float]],
    summary: dict[str, Any],
) -> str:
    """A standalone page (no scripts, no network): summary, two SVG charts, the table."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape('' if r.get(c) is None else str(r[c]))}</td>" for c in COLUMNS
        )
        + "</tr>"
        for r in items
    )
    facts = "".join(
        f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in summary.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>runctl costs</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}th{{background:#f1f3f5}}</style>
</head><body>
<h1>runctl costs</h1>
<ul>{facts}</ul>
<p>Costs are recorded state intervals &times; the price captured at launch; stopped time
counts disk storage only (published per-GB rates). Prices shown empty are unknown, not zero.</p>
<h2>Accumulated cost over time</h2>
{_line_chart(series, 1000, 320) if series else "<p>no instances recorded</p>"}
<h2>Accumulated cost per instance</h2>
{_bar_chart(items, 1000)}
<h2>Instances</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""
