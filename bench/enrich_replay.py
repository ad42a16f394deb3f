"""Replaying already-enriched days: how many endpoint calls and how much time a second run costs.

Three days of demo data are ingested into a private catalog; ``extract_review_keywords`` (llm
extractor, against tests/fault_server.py with a fixed latency) runs once per day, then the same days
are replayed. Every result is in ``ops.llm_cache`` after the first run, so the replay must send
nothing. Figure: the replay's endpoint calls (target 0); the ratio is replay wall time / first-run
wall time over the three days, both measured in this run.

Run: ``.venv/bin/python bench/enrich_replay.py`` (writes ``bench/results/enrich_replay.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import common

NAME = "enrich_replay"
TARGET_CALLS = 0
# Pacing out of the way (as in tests/unit/test_keywords_job.py): the first run's cost is the calls.
RPM, TPM = 1_000_000, 1_000_000_000


PHASES = ("ensure_tables", "call_misses", "table_overwrites", "record_metrics")


def phase_targets() -> dict[str, tuple[Any, str]]:
    """The functions the job calls whose time is worth seeing (patched only to time them)."""
    from pyspark.sql.readwriter import DataFrameWriterV2

    from placerec import tables
    from placerec.enrich import cache, keywords

    return {
        "ensure_tables": (tables, "ensure_tables"),
        "call_misses": (cache, "call_misses"),
        # features.review_keywords and raw.quarantine (write_quarantine) are both replaced this way.
        "table_overwrites": (DataFrameWriterV2, "overwrite"),
        "record_metrics": (keywords, "record_metrics"),
    }


def snapshot(spark: Any, table: str, where: str, columns: list[str]) -> list[tuple[Any, ...]]:
    """The rows of a table slice, sorted, to compare a replay's output with the first run's."""
    rows = spark.table(table).where(where).select(*columns).collect()
    return sorted(tuple(r) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the endpoint takes per request")
    parser.add_argument("--places", type=int, default=300)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--events", type=int, default=30_000)
    args = parser.parse_args()
    common.quiet_logs()

    from tests.fault_server import FaultServer

    first_day = date(2026, 11, 1)
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=timezone.utc)
    days = [start + timedelta(days=i) for i in range(args.days)]
    per_day: list[dict[str, Any]] = []
    with common.private_home(NAME) as home:
        from placerec.demo import generate
        from placerec.enrich.keywords import JOB, resolve_extractor, run_extract_review_keywords
        from placerec.ingest.job import run_ingest
        from placerec.settings import get_settings
        from placerec.spark import get_spark

        landing = home / "landing"
        generate(landing, first_day, args.days, seed=42, places=args.places, users=args.users, events=args.events)
        spark = get_spark("bench-enrich-replay")
        try:
            ingest_s = []
            for d in days:
                t = time.monotonic()
                run_ingest(spark, landing, d, d + timedelta(days=1), run_id="bench")
                ingest_s.append(round(time.monotonic() - t, 3))
            with FaultServer(latency_s=args.latency, max_lifetime_s=1800) as server:
                settings = dataclasses.replace(
                    get_settings(),
                    llm_base_url=server.base_url,
                    llm_model=f"bench-replay-{int(time.time())}",
                    llm_rpm=RPM,
                    llm_tpm=TPM,
                )
                spec = resolve_extractor("llm", settings=settings)
                for label in ("first", "replay"):
                    for i, d in enumerate(days):
                        before = server.requests
                        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in PHASES}
                        with contextlib.ExitStack() as stack:
                            for name, (module, attr) in phase_targets().items():
                                stack.enter_context(common.timed_calls(module, attr, timings[name]))
                            t = time.monotonic()
                            run = run_extract_review_keywords(
                                spark, d, d + timedelta(days=1), run_id=f"bench-{label}", spec=spec, settings=settings
                            )
                            wall = time.monotonic() - t
                        phases = {name: round(sum(b - a for a, b in spans), 3) for name, spans in timings.items()}
                        phases["rest"] = round(wall - sum(phases.values()), 3)
                        where = f"review_ts >= '{d:%Y-%m-%d}' AND review_ts < '{d + timedelta(days=1):%Y-%m-%d}'"
                        rows = snapshot(
                            spark, "features.review_keywords", where, ["review_id", "keyword", "aspect", "evidence"]
                        )
                        quarantine = snapshot(
                            spark,
                            "raw.quarantine",
                            f"job = '{JOB}' AND interval_start = '{d:%Y-%m-%d}'",
                            ["record", "reason"],
                        )
                        figures = {
                            "wall_s": round(wall, 3),
                            "job_seconds": round(run.seconds, 3),
                            "call_seconds": run.call_seconds,
                            "endpoint_calls": server.requests - before,
                            "reviews": run.reviews,
                            "distinct_texts": run.distinct_texts,
                            "cache_hits": run.cache_hits,
                            "sent": run.sent,
                            "tokens": run.tokens,
                            "keyword_rows": run.keyword_rows,
                            "quarantined": run.quarantined,
                            "phases_s": phases,
                        }
                        if label == "first":
                            per_day.append({"day": f"{d:%Y-%m-%d}", "first": figures, "_rows": (rows, quarantine)})
                        else:
                            entry = per_day[i]
                            entry["replay"] = figures
                            entry["replay_output_identical"] = entry.pop("_rows") == (rows, quarantine)
                faults = dict(server.faults)
        finally:
            spark.stop()

    first_s = sum(e["first"]["wall_s"] for e in per_day)
    replay_s = sum(e["replay"]["wall_s"] for e in per_day)
    replay_calls = sum(e["replay"]["endpoint_calls"] for e in per_day)
    ratio = replay_s / first_s
    result: dict[str, Any] = {
        "name": NAME,
        "figure": replay_calls,
        "unit": "endpoint calls made by the replay of already-enriched days",
        "baseline": round(first_s, 3),
        "baseline_is": "wall seconds of the first run of the same days (the ratio is replay / first wall time)",
        "replay_wall_s": round(replay_s, 3),
        "ratio": round(ratio, 3),
        "target": TARGET_CALLS,
        "meets_target": replay_calls == TARGET_CALLS,
        "first_run_calls": sum(e["first"]["endpoint_calls"] for e in per_day),
        "replay_output_identical": all(e["replay_output_identical"] for e in per_day),
        "params": {
            "days": args.days,
            "start": f"{first_day:%Y-%m-%d}",
            "demo": {"seed": 42, "places": args.places, "users": args.users, "events": args.events},
            "latency_s": args.latency,
            "llm_concurrency": settings.llm_concurrency,
            "enrich_partitions": settings.enrich_partitions,
            "llm_rpm": RPM,
            "llm_tpm": TPM,
        },
        "ingest_s": ingest_s,
        "server_faults": faults,
        "per_day": per_day,
        "notes": (
            "wall_s is timed around run_extract_review_keywords; job_seconds is the job's own figure (what "
            "ops.task_metrics records), which stops before the metrics MERGE. phases_s: ensure_tables, "
            "call_misses (the endpoint calls and cache appends), table_overwrites (features.review_keywords and "
            "raw.quarantine), record_metrics; rest is reading, joins and counts."
        ),
    }
    path = common.write_result(result)
    print(
        f"{NAME}: replay made {replay_calls} endpoint calls (target {TARGET_CALLS}; first run "
        f"{result['first_run_calls']}); replay {replay_s:.1f} s vs first {first_s:.1f} s (ratio {ratio:.3f}); "
        f"output identical: {result['replay_output_identical']} → {path}"
    )


if __name__ == "__main__":
    main()
