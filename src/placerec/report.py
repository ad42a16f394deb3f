"""Read-side summaries of the tables, for people: per-day ingestion and quarantine counts."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from placerec.catalog import get_catalog
from placerec.settings import Settings
from placerec.tables import load_table


@dataclass
class DayCounts:
    day: date
    events: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    rows_read: int = 0
    reviews: int = 0
    places: int = 0
    seconds: float = 0.0


def _ts(d: date) -> str:
    return datetime.combine(d, time(0), tzinfo=timezone.utc).isoformat()


def ingestion_by_day(
    first: date, last: date, job: str = "ingest_events", settings: Settings | None = None
) -> list[DayCounts]:
    """Events in ``raw.events`` and quarantined records by reason, for each day in ``[first, last]``."""
    catalog = get_catalog(settings)
    days = {first + timedelta(n): DayCounts(first + timedelta(n)) for n in range((last - first).days + 1)}
    lo, hi = _ts(first), _ts(last + timedelta(days=1))
    events = (
        load_table(catalog, "raw.events")
        .scan(row_filter=f"event_ts >= '{lo}' and event_ts < '{hi}'", selected_fields=("event_ts",))
        .to_arrow()
    )
    for ts in events.column("event_ts").to_pylist():
        days[ts.astimezone(timezone.utc).date()].events += 1
    quarantine = (
        load_table(catalog, "raw.quarantine")
        .scan(
            row_filter=f"job = '{job}' and interval_start >= '{lo}' and interval_start < '{hi}'",
            selected_fields=("interval_start", "reason"),
        )
        .to_arrow()
        .to_pylist()
    )
    for row in quarantine:
        days[row["interval_start"].astimezone(timezone.utc).date()].quarantined[row["reason"]] += 1
    metrics = (
        load_table(catalog, "ops.task_metrics")
        .scan(
            row_filter=f"job = '{job}' and interval_start >= '{lo}' and interval_start < '{hi}'",
            selected_fields=("interval_start", "rows_read", "seconds", "details"),
        )
        .to_arrow()
        .to_pylist()
    )
    for row in metrics:
        d = days[row["interval_start"].astimezone(timezone.utc).date()]
        d.rows_read, d.seconds = row["rows_read"] or 0, row["seconds"] or 0.0
        written = json.loads(row["details"] or "{}").get("written", {})
        d.reviews, d.places = written.get("reviews", 0), written.get("places", 0)
    return [days[d] for d in sorted(days)]


def format_ingestion(rows: list[DayCounts]) -> str:
    """A plain table: one line per day, quarantine broken down by reason."""
    reasons = sorted({r for d in rows for r in d.quarantined})
    out = [
        f"{'day':<10} {'lines':>7} {'events':>7} {'reviews':>7} {'places':>6} {'quarant.':>8} {'secs':>5}  by reason"
    ]
    for d in rows:
        detail = ", ".join(f"{r} {d.quarantined[r]}" for r in reasons if d.quarantined[r])
        out.append(
            f"{d.day.isoformat():<10} {d.rows_read:>7} {d.events:>7} {d.reviews:>7} {d.places:>6} "
            f"{sum(d.quarantined.values()):>8} {d.seconds:>5.0f}  {detail}"
        )
    total_q: Counter[str] = sum((d.quarantined for d in rows), Counter())
    out.append(
        f"{'total':<10} {sum(d.rows_read for d in rows):>7} {sum(d.events for d in rows):>7} "
        f"{sum(d.reviews for d in rows):>7} {sum(d.places for d in rows):>6} {sum(total_q.values()):>8}"
    )
    return "\n".join(out)
