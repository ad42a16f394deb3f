"""What the placerec page shows, read from the tables (pyiceberg) and OpenSearch: plain data.

Each function answers one panel and takes the catalog, so a test can compare a panel with the
table it reads. Nothing here writes.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And

from placerec.tables import TABLES, equals, load_table

log = logging.getLogger(__name__)

SEGMENTS = ("all", "cold", "light", "heavy")


@dataclass(frozen=True)
class Freshness:
    """A table's current snapshot: when it was committed and what it holds."""

    table: str
    rows: int
    files: int
    committed_at: str | None
    age_hours: float | None
    snapshot_id: str | None


@dataclass(frozen=True)
class IngestDay:
    day: str
    rows_read: int
    rows_written: int
    rows_quarantined: int
    quarantine_rate: float
    by_reason: dict[str, int]
    run_id: str


@dataclass(frozen=True)
class LlmRun:
    interval: str
    run_id: str
    calls: int
    cache_hits: int
    tokens: int
    cost: float
    budget_tokens: int | None
    budget_cost: float | None
    extractor: str


@dataclass(frozen=True)
class ModelRun:
    model_version: str
    trained_for: str
    promoted: bool
    forced: bool
    created_at: str
    # (method, segment) -> NDCG@10, with the paired 95 % interval of hybrid - popularity per segment
    ndcg: dict[str, dict[str, float]] = field(default_factory=dict)
    versus_popularity: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexVersion:
    version: str
    family: str
    index_name: str
    alias: str
    model_version: str
    docs: int
    status: str
    created_at: str
    live: bool


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(timezone.utc).isoformat(timespec="seconds") if ts else None


def freshness(catalog: Catalog, now: datetime | None = None) -> list[Freshness]:
    """Every design table's current snapshot (a table with no commit yet: rows 0, no time)."""
    now = now or datetime.now(timezone.utc)
    out = []
    for t in TABLES:
        snap = load_table(catalog, t.identifier).current_snapshot()
        if snap is None:
            out.append(Freshness(t.identifier, 0, 0, None, None, None))
            continue
        summary = snap.summary.additional_properties if snap.summary else {}
        at = datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=timezone.utc)
        out.append(
            Freshness(
                t.identifier,
                int(summary.get("total-records", 0)),
                int(summary.get("total-data-files", 0)),
                _iso(at),
                round((now - at).total_seconds() / 3600, 2),
                str(snap.snapshot_id),
            )
        )
    return out


def _task_metrics(catalog: Catalog, column: str, value: str) -> list[dict[str, Any]]:
    """``ops.task_metrics`` rows where ``column`` equals ``value`` (any string: a bound expression,
    not SQL text), ``details`` parsed (unparseable details read as empty)."""
    rows = load_table(catalog, "ops.task_metrics").scan(row_filter=equals(column, value)).to_arrow().to_pylist()
    for r in rows:
        try:
            r["details"] = json.loads(r["details"] or "{}")
        except json.JSONDecodeError:
            r["details"] = {}
    return rows


def _metrics_rows(catalog: Catalog, job: str) -> list[dict[str, Any]]:
    return sorted(_task_metrics(catalog, "job", job), key=lambda r: (r["interval_start"], r["interval_end"]))


def ingest_days(catalog: Catalog) -> list[IngestDay]:
    """Per ingested day: lines read, rows written and quarantined, the quarantine rate and its reasons
    (summed over the feeds). Days ingest skipped (no landing files) are left out."""
    out = []
    for r in _metrics_rows(catalog, "ingest_events"):
        if r["details"].get("skipped"):
            continue
        by_reason: dict[str, int] = defaultdict(int)
        for reasons in (r["details"].get("quarantined") or {}).values():
            for reason, n in reasons.items():
                by_reason[reason] += int(n)
        read = int(r["rows_read"] or 0)
        out.append(
            IngestDay(
                r["interval_start"].date().isoformat(),
                read,
                int(r["rows_written"] or 0),
                int(r["rows_quarantined"] or 0),
                round(int(r["rows_quarantined"] or 0) / read, 4) if read else 0.0,
                dict(sorted(by_reason.items())),
                r["run_id"],
            )
        )
    return out


def _span(r: dict[str, Any]) -> str:
    start, end = r["interval_start"].date(), r["interval_end"].date()
    days = (end - start).days
    return start.isoformat() if days <= 1 else f"{start.isoformat()} +{days}d"


def _extractor(value: Any) -> str:
    """The run's extractor as recorded: ``{"extractor", "model", "prompt_version"}`` or a name."""
    if isinstance(value, dict):
        name, model, prompt = value.get("extractor", "?"), value.get("model"), value.get("prompt_version")
        return f"{name} ({', '.join(str(v) for v in (model, prompt) if v)})" if model or prompt else str(name)
    return "" if value is None else str(value)


def llm_runs(catalog: Catalog) -> list[LlmRun]:
    """Per keyword-extraction run (one interval each): LLM calls, cache hits, tokens, cost and the
    run's budget. Dry runs record nothing, so they are not here."""
    out = []
    for r in _metrics_rows(catalog, "extract_review_keywords"):
        d = r["details"]
        budget = d.get("budget") or {}
        out.append(
            LlmRun(
                _span(r),
                r["run_id"],
                int(r["calls"] or 0),
                int(r["cache_hits"] or 0),
                int(r["tokens"] or 0),
                round(float(r["cost"] or 0.0), 6),
                budget.get("tokens"),
                budget.get("cost"),
                _extractor(d.get("extractor")),
            )
        )
    return out


def _parse_metrics(metrics: dict[str, str]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """``model.runs.metrics``: ``<method>/<segment>/ndcg@10`` per method, and the hybrid's paired
    difference to popularity ``hybrid/<segment>/ndcg@10 vs popularity`` (`` lo``, `` hi``)."""
    ndcg: dict[str, dict[str, float]] = defaultdict(dict)
    versus: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) != 3:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        method, segment, figure = parts
        if figure == "ndcg@10":
            ndcg[method][segment] = v
        elif method == "hybrid" and figure.startswith("ndcg@10 vs popularity"):
            versus[segment][figure.removeprefix("ndcg@10 vs popularity").strip() or "diff"] = v
    return dict(ndcg), dict(versus)


def model_runs(catalog: Catalog) -> list[ModelRun]:
    """Every training run, oldest first, with NDCG@10 per method and segment."""
    rows = load_table(catalog, "model.runs").scan().to_arrow().to_pylist()
    out = []
    for r in sorted(rows, key=lambda r: r["created_at"]):
        ndcg, versus = _parse_metrics(dict(r["metrics"] or {}))
        out.append(
            ModelRun(
                r["model_version"],
                r["trained_for"].isoformat(),
                bool(r["promoted"]),
                bool(r["forced"]),
                _iso(r["created_at"]) or "",
                ndcg,
                versus,
            )
        )
    return out


def index_versions(catalog: Catalog, aliases: dict[str, list[str]]) -> list[IndexVersion]:
    """Published index versions, newest first; ``live`` when an alias points at the index now
    (``aliases``: alias -> indices, as OpenSearch answers)."""
    pointed = {i for indices in aliases.values() for i in indices}
    rows = load_table(catalog, "ops.index_versions").scan().to_arrow().to_pylist()
    return [
        IndexVersion(
            str(r["version"] or ""),
            str(r["family"] or ""),
            r["index_name"],
            str(r["alias"] or ""),
            str(r["model_version"] or ""),
            int(r["docs"] or 0),
            str(r["status"] or ""),
            _iso(r["created_at"]) or "",
            r["index_name"] in pointed,
        )
        for r in sorted(rows, key=lambda r: (r["created_at"], r["index_name"]), reverse=True)
    ]


def run_report(catalog: Catalog, run_id: str) -> list[dict[str, Any]]:
    """What each job recorded for an Airflow run (``ops.task_metrics.run_id``), details parsed."""
    return sorted(_task_metrics(catalog, "run_id", run_id), key=lambda r: r["job"])


def as_json(items: list[Any]) -> list[dict[str, Any]]:
    return [asdict(i) for i in items]


def user_with_reasons(catalog: Catalog) -> str:
    """The first user (by id) whose top place of the newest promoted model has a reason ("" if none)."""
    runs = [r for r in model_runs(catalog) if r.promoted]
    if not runs:
        return ""
    rows = (
        load_table(catalog, "model.recommendations")
        .scan(
            row_filter=And(equals("model_version", runs[-1].model_version), equals("rank", 1)),
            selected_fields=("user_id", "reason"),
        )
        .to_arrow()
        .to_pylist()
    )
    return min((r["user_id"] for r in rows if r["reason"]), default="")
