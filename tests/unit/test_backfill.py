"""The chain backfill's plan and LLM estimate (``placerec.backfill``) on generated landing files and a
real ``ops.llm_cache`` in the private catalog; the runs themselves: ``tests/integration/test_backfill_chain.py``."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from placerec.backfill import DAG_OF, format_plan, plan_backfill
from placerec.demo import generate
from placerec.settings import get_settings

pytestmark = pytest.mark.unit

FIRST = date(2034, 5, 1)


@pytest.fixture
def landing(unit_home: Path, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    from placerec.catalog import ensure_tables_once

    ensure_tables_once(get_settings())
    return generate(tmp_path / "landing", FIRST, 3, seed=3, places=40, users=80, events=900)


def test_the_plan_is_each_day_whole_in_day_order(landing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = plan_backfill(FIRST, FIRST + timedelta(days=2), "train", landing=str(tmp_path / "landing"))
    assert [(s.dag_id, s.first.isoformat(), s.last.isoformat(), s.how) for s in plan.steps] == [
        (dag, day, day, how)
        for day in ("2034-05-01", "2034-05-02", "2034-05-03")
        for dag, how in (("ingest_events", "backfill"), ("enrich_reviews", "trigger"), ("train_hybrid", "trigger"))
    ]
    assert "ingest_events -> enrich_reviews -> train_hybrid (9 runs" in format_plan(plan)
    # through ingest alone: one Airflow backfill over the whole range
    only = plan_backfill(FIRST, FIRST + timedelta(days=2), "ingest", landing=str(tmp_path))
    assert [(s.dag_id, s.first, s.last) for s in only.steps] == [(DAG_OF["ingest"], FIRST, FIRST + timedelta(days=2))]
    for bad, message in (
        ((FIRST, FIRST - timedelta(days=1), "publish"), "the range is empty"),
        ((FIRST, FIRST, "serve"), "--through must be one of"),
        ((FIRST, FIRST + timedelta(days=400), "ingest"), "at most 366"),
    ):
        with pytest.raises(ValueError, match=message):
            plan_backfill(*bad, landing=str(tmp_path))


def test_the_estimate_counts_the_valid_review_texts_the_cache_does_not_hold(landing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    from placerec.catalog import get_catalog
    from placerec.enrich import cache
    from placerec.enrich.keywords import resolve_extractor
    from placerec.ingest.records import validate_line

    root = tmp_path / "landing"
    s = dataclasses.replace(get_settings(), llm_model="gpt-4o-mini")
    # the truth, line by line: every review line of the three days and the valid ones' texts
    lines, texts = 0, {}
    for i in range(3):
        start = datetime(2034, 5, 1 + i, tzinfo=timezone.utc)
        for f in sorted((root / "reviews" / f"dt={start.date()}").glob("*.jsonl")):
            for raw in f.read_bytes().splitlines():
                lines += 1
                v = validate_line("reviews", raw, start, start + timedelta(days=1))
                if v.values is not None:
                    texts[v.values[6]] = v.values[4]
    assert landing["counts"]["reviews"]["2034-05-01"]["lines"] > 0 and 0 < len(texts) < lines
    plan = plan_backfill(FIRST, FIRST + timedelta(days=2), "enrich", landing=str(root), settings=s, extractor="llm")
    cost = plan.cost
    assert cost is not None
    assert (cost.review_lines, cost.distinct_texts, cost.cached, cost.to_send) == (lines, len(texts), 0, len(texts))
    assert cost.tokens_in > 0 and cost.cost_max > 0 and cost.priced
    assert "requests" in format_plan(plan) and f"${cost.cost_max:.4f} at most" in format_plan(plan)

    # two of the texts are in the cache for this model and prompt: two fewer requests
    spec = resolve_extractor("llm", settings=s)
    held = sorted(texts)[:2]
    table = get_catalog().load_table(cache.TABLE)
    now = datetime.now(timezone.utc)
    rows = [
        {
            "cache_key": cache.cache_key(cache.KEYWORDS, spec.model, spec.prompt_version, h),
            "kind": cache.KEYWORDS,
            "model": spec.model,
            "prompt_version": spec.prompt_version,
            "content_hash": h,
            "result": "[]",
            "tokens_in": 1,
            "tokens_out": 1,
            "created_at": now,
        }
        for h in held
    ]
    table.append(pa.Table.from_pylist(rows, schema=table.schema().as_arrow()))
    again = plan_backfill(FIRST, FIRST + timedelta(days=2), "enrich", landing=str(root), settings=s, extractor="llm")
    assert again.cost is not None and (again.cost.cached, again.cost.to_send) == (2, len(texts) - 2)
    assert again.cost.cost_max < cost.cost_max
    # the offline extractor sends nothing
    local = plan_backfill(FIRST, FIRST, "enrich", landing=str(root), settings=s, extractor="local")
    assert local.cost is not None and local.cost.to_send == 0 and "no LLM requests" in format_plan(local)
