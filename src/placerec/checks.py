"""Data-quality checks of a job's interval, run after the job: each gives a verdict with its figures.

Checks, in the order :func:`run_checks` runs them:

- ``row_count``: rows written a day against the median of the job's previous
  ``check_history_intervals`` non-skipped intervals (``ops.task_metrics``); outside
  ``[check_min_row_ratio, check_max_row_ratio]`` of it fails. Intervals are compared per day, so a
  week's backfill in one run and the daily runs after it agree. Fewer than ``check_min_history``
  previous intervals: a pass, "not enough history".
- ``quarantine_rate``: rows quarantined / rows read above ``check_max_quarantine_rate`` fails, naming
  the most frequent reasons.
- ``null_rates:<table>``: for each column validation requires (where it applies: ``place_id`` of any
  event but a search, ...), the share of the interval's rows without a value, above ``check_max_null_rate``.
  Raw tables are read as of the last complete ingest commit, as every reader reads them.
- ``schema_drift:<table>``: the live Iceberg schema against :mod:`placerec.tables` (a column missing,
  added, or of another type).

Input is hostile: a first-ever run, an empty table, null figures, ``details`` that are not JSON. A
check never raises for them: it fails saying what is wrong, or passes saying why it could not judge.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from placerec.settings import Settings, get_settings
from placerec.tables import TableDef, load_table, table_def

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.schema import Schema

TOP_REASONS = 3
_DAY = timedelta(days=1)


class DataQualityError(Exception):
    """One or more checks failed; the message lists each failed check with its figures."""

    def __init__(self, message: str, results: Sequence[CheckResult]) -> None:
        super().__init__(message)
        self.results = tuple(results)


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check: ``ok``, a sentence saying why, and the figures it was judged on."""

    name: str
    ok: bool
    message: str
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MetricsRow:
    """The figures of one ``ops.task_metrics`` row the checks read (any of them may be null)."""

    job: str
    interval_start: datetime | None
    interval_end: datetime | None
    run_id: str | None = None
    rows_read: Any = None
    rows_written: Any = None
    rows_quarantined: Any = None
    details: str | None = None
    recorded_at: datetime | None = None

    def parsed_details(self) -> dict[str, Any] | None:
        """``details`` as a JSON object; None when it is missing or is not one."""
        try:
            found = json.loads(self.details) if self.details else {}
        except (TypeError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def skipped(self) -> str:
        """Why the run did no work (no landing files, a dry run), or "" when it did (or cannot tell)."""
        found = self.parsed_details() or {}
        if found.get("skipped"):
            return str(found["skipped"]) if isinstance(found["skipped"], str) else "no input"
        return "dry run" if found.get("dry_run") else ""

    def days(self) -> float | None:
        """Length of the interval in days, None when it is missing or empty."""
        if self.interval_start is None or self.interval_end is None or self.interval_end <= self.interval_start:
            return None
        return (self.interval_end - self.interval_start) / _DAY


@dataclass(frozen=True)
class Required:
    """A column validation requires: in every row, or only where ``when_column`` is (or, ``negate``d,
    is not) one of ``when_values``."""

    column: str
    when_column: str = ""
    when_values: tuple[str, ...] = ()
    negate: bool = False

    def describe(self) -> str:
        if not self.when_column:
            return self.column
        values = "/".join(self.when_values)
        return f"{self.column} (where {self.when_column} {'is not' if self.negate else 'is'} {values})"


@dataclass(frozen=True)
class IntervalTable:
    """A raw table whose rows of an interval are those with ``ts_column`` in it, and its required columns."""

    identifier: str
    ts_column: str
    required: tuple[Required, ...]


_SOURCE = (Required("source"), Required("source_file"), Required("source_line"))
# As :mod:`placerec.ingest.records` validates them (``source`` defaults to "unknown").
EVENTS = IntervalTable(
    "raw.events",
    "event_ts",
    (
        Required("event_id"),
        Required("event_type"),
        Required("event_ts"),
        Required("user_id"),
        Required("place_id", "event_type", ("search",), negate=True),
        Required("query", "event_type", ("search",)),
        Required("review_id", "event_type", ("review",)),
        Required("rating", "event_type", ("review",)),
        *_SOURCE,
    ),
)
REVIEWS = IntervalTable(
    "raw.reviews",
    "review_ts",
    tuple(Required(c) for c in ("review_id", "place_id", "user_id", "rating", "text", "review_ts", "content_hash"))
    + _SOURCE,
)


@dataclass(frozen=True)
class JobChecks:
    """What is checked for a job besides its metrics row: raw tables' nulls, and tables' schemas."""

    interval_tables: tuple[IntervalTable, ...] = ()
    schema_tables: tuple[str, ...] = ()


# raw.places is not null-checked: its updated_ts is optional, so "the interval's places" is not defined.
JOB_CHECKS: dict[str, JobChecks] = {
    "ingest_events": JobChecks(
        (EVENTS, REVIEWS), ("raw.events", "raw.reviews", "raw.places", "raw.quarantine", "ops.task_metrics")
    ),
}


def _count(value: Any) -> int | None:
    """A row count as an int; None for null, NaN, negative, fractional or non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    return int(value) if value >= 0 else None


def _ratio_text(value: float) -> str:
    return f"{value:.2f}"


def check_row_count(
    current: MetricsRow,
    previous: Iterable[MetricsRow],
    *,
    window: int,
    min_history: int,
    min_ratio: float,
    max_ratio: float,
) -> CheckResult:
    """Rows written a day in ``current`` against the median of the ``window`` newest usable ``previous``
    rows (earlier intervals of the job that did work and whose figures are readable)."""
    name = "row_count"
    if reason := current.skipped():
        return CheckResult(name, True, f"interval skipped ({reason}): no rows to compare", {"skipped": reason})
    written, days = _count(current.rows_written), current.days()
    if written is None or days is None:
        return CheckResult(
            name,
            False,
            f"the metrics row has no usable rows_written ({current.rows_written!r}) or interval",
            {"rows_written": _json_safe(current.rows_written)},
        )
    history, ignored = _history(current, previous, window)
    figures: dict[str, Any] = {
        "rows_written": written,
        "rows_per_day": round(written / days, 3),
        "history": len(history),
        "history_ignored": ignored,
        "min_history": min_history,
    }
    if len(history) < min_history:
        message = f"not enough history: {len(history)} previous interval(s), {min_history} needed"
        return CheckResult(name, True, message, figures)
    median = statistics.median(history)
    figures.update(median_per_day=round(median, 3), min_ratio=min_ratio, max_ratio=max_ratio)
    if median == 0:
        return CheckResult(name, True, "the trailing median is 0 rows a day: no ratio to judge", figures)
    ratio = written / days / median
    figures["ratio"] = round(ratio, 4)
    said = (
        f"{written} rows written ({written / days:g} a day) are {_ratio_text(ratio)} of the trailing median "
        f"{median:g} a day over {len(history)} intervals"
    )
    if ratio < min_ratio:
        return CheckResult(name, False, f"{said}, below the minimum {min_ratio:g}", figures)
    if ratio > max_ratio:
        return CheckResult(name, False, f"{said}, above the maximum {max_ratio:g}", figures)
    return CheckResult(name, True, f"{said}, within [{min_ratio:g}, {max_ratio:g}]", figures)


def _source(row: MetricsRow) -> str:
    """What a run read (ingest: its landing root; "" when not recorded): a day is compared only with
    days of the same source, so a test's or a one-off root's small day is not judged by the main feed."""
    return str((row.parsed_details() or {}).get("landing") or "")


def _history(current: MetricsRow, previous: Iterable[MetricsRow], window: int) -> tuple[list[float], int]:
    """Rows a day of the ``window`` newest intervals before ``current`` that did work on the same
    source; and how many earlier rows were passed over because their figures, interval or details
    could not be read."""
    usable: list[tuple[datetime, float]] = []
    ignored = 0
    start = current.interval_start
    source = _source(current)
    for row in previous:
        if row.interval_start is None or start is None or row.interval_start >= start:
            continue
        if row.parsed_details() is None:
            ignored += 1
            continue
        if row.skipped() or _source(row) != source:
            continue
        written, days = _count(row.rows_written), row.days()
        if written is None or days is None:
            ignored += 1
            continue
        usable.append((row.interval_start, written / days))
    usable.sort(key=lambda item: item[0], reverse=True)
    return [per_day for _, per_day in usable[: max(window, 0)]], ignored


def check_quarantine_rate(current: MetricsRow, *, max_rate: float, top: int = TOP_REASONS) -> CheckResult:
    """Rows quarantined / rows read of ``current`` against ``max_rate``; a failure names the top reasons."""
    name = "quarantine_rate"
    if reason := current.skipped():
        return CheckResult(name, True, f"interval skipped ({reason}): nothing read", {"skipped": reason})
    read, quarantined = _count(current.rows_read), _count(current.rows_quarantined)
    figures: dict[str, Any] = {
        "rows_read": read if read is not None else _json_safe(current.rows_read),
        "rows_quarantined": quarantined if quarantined is not None else _json_safe(current.rows_quarantined),
        "max_rate": max_rate,
    }
    if quarantined is None and current.rows_quarantined is not None:
        return CheckResult(name, False, f"rows_quarantined is not a count: {current.rows_quarantined!r}", figures)
    quarantined = quarantined or 0
    if not read:
        if quarantined:
            message = f"{quarantined} rows quarantined but rows_read is {current.rows_read!r}: inconsistent metrics"
            return CheckResult(name, False, message, figures)
        return CheckResult(name, True, "no rows read: no rate to judge", figures)
    rate = quarantined / read
    figures["rate"] = round(rate, 4)
    said = f"{quarantined} of {read} rows read quarantined ({rate:.1%})"
    if rate <= max_rate:
        return CheckResult(name, True, f"{said}, at most {max_rate:.1%}", figures)
    reasons = top_reasons(current.parsed_details(), top)
    figures["top_reasons"] = dict(reasons)
    named = ", ".join(f"{reason} {n}" for reason, n in reasons) if reasons else "unknown (details unreadable)"
    return CheckResult(name, False, f"{said}, over the maximum {max_rate:.1%}; top reasons: {named}", figures)


def top_reasons(details: Mapping[str, Any] | None, top: int = TOP_REASONS) -> list[tuple[str, int]]:
    """The ``top`` most frequent ``feed/reason`` of ``details["quarantined"]`` (``{feed: {reason: n}}``),
    most frequent first (ties by name); entries that are not counts are passed over."""
    counts: Counter[str] = Counter()
    by_feed = (details or {}).get("quarantined")
    for feed, reasons in by_feed.items() if isinstance(by_feed, dict) else ():
        for reason, n in reasons.items() if isinstance(reasons, dict) else ():
            if (found := _count(n)) is not None and found > 0:
                counts[f"{feed}/{reason}"] += found
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


def null_counts(rows: pa.Table, required: Sequence[Required]) -> dict[str, dict[str, int]]:
    """For each required column present in ``rows``: ``{"rows": rows it applies to, "nulls": those without
    a value}`` (an empty or blank string counts as no value, as validation has it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, dict[str, int]] = {}
    for rule in required:
        if rule.column not in rows.column_names or (rule.when_column and rule.when_column not in rows.column_names):
            continue
        column = rows.column(rule.column)
        if rule.when_column:
            condition = rows.column(rule.when_column)
            matches = pc.fill_null(pc.is_in(condition, pa.array(rule.when_values)), False)
            # a row whose condition column is null applies to neither side: that column's own rule counts it
            column = column.filter(pc.and_(pc.is_valid(condition), pc.invert(matches) if rule.negate else matches))
        missing = pc.is_null(column)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            missing = pc.or_(missing, pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), False))
        out[rule.describe()] = {"rows": len(column), "nulls": int(pc.sum(missing).as_py() or 0)}
    return out


def check_null_rates(
    table: IntervalTable, rows: pa.Table, *, max_rate: float, missing: Sequence[str] = ()
) -> CheckResult:
    """Share of ``rows`` (the interval's) without a value in each required column, against ``max_rate``.
    ``missing`` are required columns the live table lacks (the schema check names them)."""
    name = f"null_rates:{table.identifier}"
    figures: dict[str, Any] = {"rows": rows.num_rows, "max_rate": max_rate}
    if missing:
        figures["not_checked"] = list(missing)
    if rows.num_rows == 0:
        return CheckResult(name, True, "no rows in the interval", figures)
    counts = null_counts(rows, table.required)
    over = {
        column: {**c, "rate": round(c["nulls"] / c["rows"], 4)}
        for column, c in counts.items()
        if c["rows"] and c["nulls"] / c["rows"] > max_rate
    }
    figures["over"] = over
    if not over:
        return CheckResult(name, True, f"{rows.num_rows} rows, null rates at most {max_rate:.1%}", figures)
    said = "; ".join(
        f"{column} null in {c['nulls']} of {c['rows']} rows ({c['rate']:.1%})" for column, c in over.items()
    )
    return CheckResult(name, False, f"{said}, over the maximum {max_rate:.1%}", figures)


def schema_differences(live: Schema, expected: Schema) -> dict[str, list[str]]:
    """Top-level columns ``missing`` from ``live``, ``added`` to it, or of another type (``changed``:
    ``name: expected -> live``); nested types are compared by their text (ids aside)."""
    have = {f.name: f for f in live.fields}
    want = {f.name: f for f in expected.fields}
    return {
        "missing": [n for n in want if n not in have],
        "added": [n for n in have if n not in want],
        "changed": [
            f"{n}: {want[n].field_type} -> {have[n].field_type}"
            for n in want
            if n in have and str(want[n].field_type) != str(have[n].field_type)
        ],
    }


def check_schema(definition: TableDef, live: Schema | None) -> CheckResult:
    """The live schema of ``definition``'s table (None: the table does not exist) against its definition."""
    name = f"schema_drift:{definition.identifier}"
    if live is None:
        return CheckResult(name, False, f"{definition.identifier} does not exist in the catalog", {"exists": False})
    diff = schema_differences(live, definition.schema())
    found = {kind: cols for kind, cols in diff.items() if cols}
    if not found:
        return CheckResult(name, True, "schema as defined", {})
    said = "; ".join(f"{kind}: {', '.join(cols)}" for kind, cols in found.items())
    return CheckResult(name, False, f"drifted from placerec.tables: {said}", found)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value if value is None or isinstance(value, (int, float, str, bool)) else repr(value)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def read_metrics(catalog: Catalog, job: str) -> list[MetricsRow]:
    """Every ``ops.task_metrics`` row of ``job``."""
    if "'" in job:
        raise ValueError(f"job name {job!r} may not contain a quote")
    columns = ("job", "interval_start", "interval_end", "run_id", "rows_read", "rows_written", "rows_quarantined")
    rows = load_table(catalog, "ops.task_metrics").scan(
        row_filter=f"job = '{job}'", selected_fields=(*columns, "details", "recorded_at")
    )
    out = []
    for row in rows.to_arrow().to_pylist():
        row["interval_start"], row["interval_end"] = _aware(row["interval_start"]), _aware(row["interval_end"])
        row["recorded_at"] = _aware(row["recorded_at"])
        out.append(MetricsRow(**row))
    return out


def interval_rows(
    catalog: Catalog, table: IntervalTable, start: datetime, end: datetime, snapshot_id: str = ""
) -> tuple[pa.Table, list[str]]:
    """The rows of ``[start, end)`` of ``table`` (its required columns, at ``snapshot_id``: "" = current),
    and the required columns the live table lacks."""
    live = load_table(catalog, table.identifier)
    have = {f.name for f in live.schema().fields}
    wanted = {table.ts_column, *(r.column for r in table.required), *(r.when_column for r in table.required)}
    wanted.discard("")
    present = sorted(c for c in wanted if c in have)
    missing = sorted(c for c in wanted if c not in have)
    if table.ts_column not in have:  # no interval to select: the schema check names the column
        return _empty_table(), missing
    where = f"{table.ts_column} >= '{start.isoformat()}' and {table.ts_column} < '{end.isoformat()}'"
    scan = live.scan(
        row_filter=where, selected_fields=tuple(present), snapshot_id=int(snapshot_id) if snapshot_id else None
    )
    return scan.to_arrow(), missing


def _empty_table() -> pa.Table:
    import pyarrow as pa

    return pa.table({})


def _current(rows: Sequence[MetricsRow], job: str, start: datetime, end: datetime) -> MetricsRow | CheckResult:
    """The job's metrics row for ``start`` (the newest recorded), or a failed check saying why there is none."""
    mine = [r for r in rows if r.interval_start == start]
    if not mine:
        return CheckResult(
            "metrics_row", False, f"no ops.task_metrics row of {job} for the interval starting {start.isoformat()}"
        )
    row = max(mine, key=lambda r: r.recorded_at or datetime.min.replace(tzinfo=timezone.utc))
    if row.interval_end != end:
        found = row.interval_end.isoformat() if row.interval_end else None
        return CheckResult(
            "metrics_row",
            False,
            f"the ops.task_metrics row of {job} starting {start.isoformat()} ends {found}, not {end.isoformat()}",
            {"interval_end": found},
        )
    return row


def metric_checks(
    rows: Sequence[MetricsRow], job: str, start: datetime, end: datetime, settings: Settings
) -> list[CheckResult]:
    """The row-count and quarantine checks of ``job``'s interval from its ``ops.task_metrics`` rows."""
    current = _current(rows, job, start, end)
    if isinstance(current, CheckResult):
        return [current]
    return [
        check_row_count(
            current,
            rows,
            window=settings.check_history_intervals,
            min_history=settings.check_min_history,
            min_ratio=settings.check_min_row_ratio,
            max_ratio=settings.check_max_row_ratio,
        ),
        check_quarantine_rate(current, max_rate=settings.check_max_quarantine_rate),
    ]


def format_result(result: CheckResult) -> str:
    """One line of a result, as the CLI prints it."""
    return f"{'PASS' if result.ok else 'FAIL'} {result.name}: {result.message}"


def failure_message(job: str, start: datetime, end: datetime, results: Sequence[CheckResult]) -> str:
    """One line for the failure, then one per failed check: its name, verdict and figures (JSON)."""
    failed = [r for r in results if not r.ok]
    lines = [
        f"data-quality checks failed for {job} [{start.isoformat()}, {end.isoformat()}): "
        f"{len(failed)} of {len(results)} failed"
    ]
    lines += [f"- {r.name}: {r.message} {json.dumps(r.figures, sort_keys=True, default=str)}" for r in failed]
    return "\n".join(lines)


def run_checks(
    job: str,
    start: datetime,
    end: datetime,
    *,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
) -> list[CheckResult]:
    """Every check of ``job`` for ``[start, end)``; raises :class:`DataQualityError` listing the failed
    ones, else returns all results (for the task's log and XCom)."""
    from placerec.catalog import get_catalog
    from placerec.ingest.commit import committed_snapshot_ids

    if start.tzinfo is None or end.tzinfo is None or not start < end:
        raise ValueError(f"interval must be aware and non-empty: [{start}, {end})")
    settings = settings or get_settings()
    catalog = catalog or get_catalog(settings)
    results = metric_checks(read_metrics(catalog, job), job, start, end, settings)
    plan = JOB_CHECKS.get(job, JobChecks())
    if plan.interval_tables:
        snapshots = committed_snapshot_ids([t.identifier for t in plan.interval_tables], catalog)
        for table in plan.interval_tables:
            rows, missing = interval_rows(catalog, table, start, end, snapshots.get(table.identifier, ""))
            results.append(check_null_rates(table, rows, max_rate=settings.check_max_null_rate, missing=missing))
    for identifier in plan.schema_tables:
        live = catalog.load_table(identifier).schema() if catalog.table_exists(identifier) else None
        results.append(check_schema(table_def(identifier), live))
    if any(not r.ok for r in results):
        raise DataQualityError(failure_message(job, start, end, results), results)
    return results
