"""Read-side summaries of the tables, for people: per-day ingestion and quarantine counts."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from placerec.catalog import get_catalog
from placerec.ingest.commit import committed_snapshot_ids
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
    committed = committed_snapshot_ids(["raw.events"], catalog)["raw.events"]  # the last complete ingest run
    events = (
        load_table(catalog, "raw.events")
        .scan(
            row_filter=f"event_ts >= '{lo}' and event_ts < '{hi}'",
            selected_fields=("event_ts",),
            snapshot_id=int(committed) if committed else None,
        )
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


@dataclass
class EnrichSummary:
    days_covered: set[date] = field(default_factory=set)
    reviews: int = 0
    keyword_rows: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    cache_hits: int = 0
    sent: int = 0
    tokens: int = 0
    cost: float = 0.0
    extractors: set[str] = field(default_factory=set)
    places: int = 0
    places_with_keywords: int = 0
    interest_users: int = 0
    examples: list[tuple[str, list[str]]] = field(default_factory=list)


def enrichment_summary(first: date, last: date, settings: Settings | None = None) -> EnrichSummary:
    """What extract_review_keywords did for the days in ``[first, last]``, and the profile tables now."""
    catalog = get_catalog(settings)
    out = EnrichSummary()
    lo, hi = _ts(first), _ts(last + timedelta(days=1))
    metrics = (
        load_table(catalog, "ops.task_metrics")
        .scan(row_filter=f"job = 'extract_review_keywords' and interval_start < '{hi}' and interval_end > '{lo}'")
        .to_arrow()
        .to_pylist()
    )
    # Newest run first: a day re-enriched by a later run (a week-long rerun after daily runs) is
    # counted once, from the run that did it last; older runs whose days are all covered are skipped.
    for row in sorted(metrics, key=lambda r: r["recorded_at"], reverse=True):
        details = json.loads(row["details"] or "{}")
        if details.get("dry_run"):
            continue
        days = set()
        d, end = row["interval_start"].astimezone(timezone.utc).date(), row["interval_end"].astimezone(timezone.utc)
        while datetime.combine(d, time(0), tzinfo=timezone.utc) < end:
            if first <= d <= last:
                days.add(d)
            d += timedelta(days=1)
        if days <= out.days_covered:
            continue
        out.days_covered |= days
        out.reviews += row["rows_read"] or 0
        out.keyword_rows += row["rows_written"] or 0
        out.calls += row["calls"] or 0
        out.cache_hits += row["cache_hits"] or 0
        out.tokens += row["tokens"] or 0
        out.cost += row["cost"] or 0.0
        out.sent += details.get("sent", 0)
        out.quarantined.update(details.get("quarantined", {}))
        extractor = details.get("extractor", {})
        out.extractors.add(f"{extractor.get('extractor')} {extractor.get('model')} {extractor.get('prompt_version')}")
    as_of = f"built_for = '{last.isoformat()}'"
    profiles = load_table(catalog, "features.place_profiles").scan(
        row_filter=as_of, selected_fields=("place_id", "top_keywords")
    )
    rows = profiles.to_arrow().to_pylist()
    out.places = len(rows)
    with_kw = sorted((r for r in rows if r["top_keywords"]), key=lambda r: r["place_id"])
    out.places_with_keywords = len(with_kw)
    out.examples = [(r["place_id"], list(r["top_keywords"])[:6]) for r in with_kw[:3]]
    interests = load_table(catalog, "features.user_interests").scan(
        selected_fields=("user_id",), row_filter=f"origin = 'search' and {as_of}"
    )
    out.interest_users = interests.to_arrow().num_rows
    return out


def format_enrichment(s: EnrichSummary) -> str:
    lines = [
        f"enrich [{'; '.join(sorted(s.extractors))}]: {s.reviews} reviews -> {s.keyword_rows} keyword rows; "
        f"{s.sent} texts sent ({s.calls} endpoint calls), {s.cache_hits} cache hits, {s.tokens} tokens, ${s.cost:.4f}",
        "  quarantined: " + (", ".join(f"{k} {v}" for k, v in sorted(s.quarantined.items())) or "none"),
        f"  place profiles as of the last day: {s.places} ({s.places_with_keywords} with review keywords); "
        f"search-interest users: {s.interest_users}",
    ]
    lines += [f"  {pid}: {', '.join(kws)}" for pid, kws in s.examples]
    return "\n".join(lines)


def job_run(
    job: str, first: date, settings: Settings | None = None, since: datetime | None = None
) -> dict[str, Any] | None:
    """The ``details`` ``job`` recorded for the interval starting ``first`` (None: none yet or none since ``since``)."""
    catalog = get_catalog(settings)
    rows = (
        load_table(catalog, "ops.task_metrics")
        .scan(row_filter=f"job = '{job}' and interval_start = '{_ts(first)}'")
        .to_arrow()
        .to_pylist()
    )
    if not rows or (since is not None and rows[0]["recorded_at"] < since):
        return None
    return json.loads(rows[0]["details"] or "{}")


def format_training(details: dict[str, Any], k: int = 10) -> str:
    """The run's verdict and its evaluation table (overall, then per user segment)."""
    from placerec.model.report import format_comparisons, format_protocol, format_table
    from placerec.model.train import GAP_CLOSED, REPORT_SEGMENTS

    if not details.get("model_version"):
        return f"train_hybrid for {details['test'][1]}: {details['gate']}"
    blend = details.get("blend", {})
    lines = [
        f"model {details['model_version']}: {details['gate']}; promoted={details['promoted']}"
        + (" (forced)" if details.get("forced") else ""),
        f"test span {details['test'][0]} .. {details['test'][1]}"
        + (f" ({len(details['test_cuts'])} rolling cuts, pooled)" if len(details.get("test_cuts", [])) > 1 else "")
        + f", {details['evaluation_users']} (user, cut) pairs; "
        "blend (chosen on validation) " + ", ".join(f"{k.removeprefix('blend_')} {v}" for k, v in blend.items()),
        f"{details['recommendations']} recommendations for {details['users_recommended']} users; "
        f"report {details['report']}",
    ]
    if any(r["method"] == "oracle" for r in details["table"]):
        lines.append(f"{details['oracle']}; '{GAP_CLOSED}' = the share of the popularity-to-oracle NDCG@{k} gap")
    elif details.get("oracle"):
        lines.append(f"no oracle row: the generated world's {details['oracle']}")
    reasons = details.get("reasons") or {}
    if reasons.get(f"warm top-{k} items"):
        lines.append(
            f"reasons: {reasons[f'warm top-{k} with a matched keyword']:.1%} of warm users' top-{k} items have a "
            "praised keyword matching the user; "
            f"{reasons['recommendations resting on a fallback reason']:.1%} of all say what they rest on instead"
        )
    segments = [seg for seg in REPORT_SEGMENTS if any(r["segment"] == seg for r in details["table"])]
    for segment in segments:
        lines += ["", f"{segment} users", format_table(details["table"], segment, k)]
    versus = format_comparisons(details["table"], segments, methods=("hybrid",))
    if versus:
        lines += ["", "hybrid against popularity (paired over the same users, 95 % bootstrap interval)", versus]
    if details.get("protocol"):
        lines += ["", format_protocol(details["protocol"], k)]
    return "\n".join(lines)


def format_publish(details: dict[str, Any]) -> str:
    """One publish: the version and its fate, documents and speed per family, the validation figures."""
    status = details.get("status", "?")
    lines = [f"publish {details.get('version')} (model {details.get('model_version')}): {status}"]
    if status == "unchanged":
        return lines[0] + f" ({details.get('reason')})"
    for family, load in (details.get("load") or {}).items():
        lines.append(
            f"  {family:<16} {load['docs']:>8} docs in {load['seconds']:>7.1f}s ({load['docs_per_s'] or 0:,.0f} docs/s)"
        )
    checks = details.get("validation") or {}
    if checks:
        lines.append(
            f"  validation: k-NN recall@10 {checks.get('recall@10')}, canned {json.dumps(checks.get('canned'))}"
        )
    if details.get("aliases_before") is not None:
        before = ", ".join(sorted(i for v in details["aliases_before"].values() for i in v)) or "none"
        lines.append(f"  aliases moved from: {before}")
    if details.get("deleted"):
        lines.append(f"  deleted old versions: {', '.join(details['deleted'])}")
    return "\n".join(lines)


def format_index_versions(rows: list[dict[str, Any]], live: str | None) -> str:
    """Versions newest first: status, model version, documents per family; the live one marked."""
    by_version: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_version.setdefault(str(r.get("version") or ""), []).append(r)
    lines = [f"{'version':<34} {'status':<12} {'model':<26} docs (places/recommendations/users)"]
    for version, family_rows in by_version.items():
        docs = {r["family"]: r.get("docs") for r in family_rows}
        mark = " *" if version == live else ""
        lines.append(
            f"{version + mark:<34} {family_rows[0].get('status') or '':<12} "
            + f"{family_rows[0].get('model_version') or '':<26} "
            + "/".join(str(docs.get(f, "-")) for f in ("places", "recommendations", "users"))
        )
    lines.append(f"live: {live or 'none'}")
    return "\n".join(lines)


def format_answer(answer: Any, who: str) -> str:
    """A recommend/search answer: where it came from, then one line per place with its reasons."""
    head = {
        "precomputed": f"recommendations for {who} (model {answer.model_version})",
        "interests": f"recommendations for {who}: no precomputed list, k-NN from search interests",
        "popular": f"recommendations for {who}: unknown user, most popular places",
        "search": f"search {who}: keyword match + k-NN, fused by rank",
    }[answer.source]
    lines = [head]
    if not answer.hits:
        lines.append("  (no places match)")
    for rank, h in enumerate(answer.hits, start=1):
        why = ", ".join(h.reasons) if h.reasons else "-"
        lines.append(
            f"{rank:>3}. {h.name or h.place_id} [{h.place_id}] {h.category} / {h.district}  "
            f"score {h.score:.3f}  because: {why}"
        )
    return "\n".join(lines)
