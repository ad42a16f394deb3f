"""How close the keyword job's call phase comes to an endpoint's capacity.

The endpoint (tests/fault_server.py) answers every request after ``latency`` seconds and admits at
most ``capacity`` at once, so no client can do better than capacity / latency requests per second:
that is the baseline. The figure is what the real Spark job ``extract_review_keywords`` (llm extractor,
``llm_concurrency = capacity`` split over ``partitions``) achieves: the server's request count over the
span from the first request's arrival to the last response, both timed by the server.

The server's sockets get TCP_NODELAY here, as any production HTTP server sets it: the stock test
server writes headers and body in two sends with Nagle on, which adds a delayed-ACK wait (~40 ms) to
every response. The same job against the stock server is measured too (``stock_server``).

Run: ``.venv/bin/python bench/enrich_throughput.py`` (writes ``bench/results/enrich_throughput.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import common

NAME = "enrich_throughput"
TARGET_RATIO = 0.9
# Pacing and chunking out of the way: this measures concurrency, not the rate limiter.
RPM, TPM, CHUNK = 100_000_000, 100_000_000_000, 1_000_000
TAG = re.compile(r"<<<REVIEW-([0-9a-f]{16})>>>")
NOTES = (
    "Figure from the 'measured' phase: fault server with TCP_NODELAY on its sockets. The stock "
    "tests/fault_server.py leaves Nagle on (socketserver's default); it writes the response headers and "
    "body in two sends, so the body waits for the client's delayed ACK (~40 ms on Linux loopback): every "
    "request then takes latency + ~40 ms and no client can reach capacity/latency. The 'stock_server' "
    "phase shows that. A warm-up job (2 x capacity reviews) runs first; the measured job, the session's "
    "second, still gets freshly forked Python workers (Spark reuses workers only from the third job on): "
    "the 2-7 s (more under load) of job_phases_s.call_misses_start_to_first_request, outside the figure's "
    "span (first arrival to last response) but inside job_seconds. control_no_spark runs the job's client "
    "(KeywordExtractor.extract_many) in plain processes, same split, same server: what Spark adds or not."
)
PHRASES = [
    "분위기가 아늑하고 조용해요",
    "주차가 불편하고 가격이 비싸요",
    "직원분들이 정말 친절했어요",
    "커피 맛이 최고예요 디저트도 맛있고",
    "웨이팅이 길어서 별로였어요",
    "화장실이 깨끗하고 창가 전망이 좋아요",
    "양이 푸짐하고 가성비 좋아요",
    "음악이 너무 시끄러워서 대화가 힘들었어요",
]


def review_texts(n: int) -> list[str]:
    """``n`` distinct review texts (the counter makes each content hash unique)."""
    return [f"{PHRASES[i % len(PHRASES)]} {PHRASES[(i * 3 + 1) % len(PHRASES)]} ({i}번째 방문)" for i in range(n)]


def concurrency_profile(records: list[Any], t0: float, t1: float, step: float = 0.25) -> list[int]:
    """Requests in flight at the server, sampled every ``step`` seconds over [t0, t1]."""
    spans = [(r.arrived, r.responded) for r in records if r.responded is not None]
    samples = []
    t = t0
    while t <= t1:
        samples.append(sum(1 for a, b in spans if a <= t < b))
        t += step
    return samples


def ramp(records: list[Any], capacity: int) -> dict[str, float]:
    """Seconds from the first arrival until ``capacity`` requests were in flight together, and the tail."""
    events = sorted([(r.arrived, 1) for r in records] + [(r.responded, -1) for r in records if r.responded])
    first = events[0][0]
    in_flight, reached = 0, None
    for t, delta in events:
        in_flight += delta
        if in_flight >= capacity and reached is None:
            reached = t
    last_arrival = max(r.arrived for r in records)
    last_response = max(r.responded for r in records if r.responded)
    return {
        "seconds_to_full_concurrency": round(reached - first, 3) if reached is not None else -1.0,
        "tail_seconds_after_last_arrival": round(last_response - last_arrival, 3),
    }


def gaps(records: list[Any], latency: float) -> dict[str, float]:
    """How long the server held each request (latency plus its own overhead), and the spans of both ends."""
    arrivals = sorted(r.arrived for r in records)
    responses = sorted(r.responded for r in records if r.responded)
    service = [r.responded - r.arrived for r in records if r.responded]
    return {
        "server_service_s_median": round(statistics.median(service), 4),
        "server_service_s_max": round(max(service), 4),
        "latency_s": latency,
        "arrival_span_s": round(arrivals[-1] - arrivals[0], 3),
        "response_span_s": round(responses[-1] - responses[0], 3),
    }


def turnaround(records: list[Any], capacity: int) -> dict[str, float]:
    """Idle time of a slot: with ``capacity`` in flight, arrival k+C waits for response k; report that wait."""
    arrivals = sorted(r.arrived for r in records)
    responses = sorted(r.responded for r in records if r.responded)
    waits = [arrivals[k + capacity] - responses[k] for k in range(min(len(responses), len(arrivals) - capacity))]
    if not waits:
        return {}
    waits.sort()
    return {
        "slot_idle_ms_median": round(1000 * statistics.median(waits), 2),
        "slot_idle_ms_p90": round(1000 * waits[int(0.9 * (len(waits) - 1))], 2),
        "slot_idle_ms_mean": round(1000 * statistics.fmean(waits), 2),
    }


def call_phase(
    spark: Any, day: datetime, texts_count: int, args: argparse.Namespace, *, model: str, nodelay: bool
) -> dict[str, Any]:
    """One run of the job on ``day``'s reviews against a fresh endpoint; the server's view of it."""
    from tests.fault_server import FaultServer

    from placerec.enrich import cache
    from placerec.enrich.keywords import resolve_extractor, run_extract_review_keywords
    from placerec.settings import get_settings

    expected_s = texts_count * args.latency / args.capacity
    with FaultServer(
        latency_s=args.latency, max_concurrent=args.capacity, max_lifetime_s=max(300.0, 10 * expected_s)
    ) as server:
        # See the module docstring: a server that leaves Nagle on holds every response body ~40 ms.
        server._httpd.RequestHandlerClass.disable_nagle_algorithm = nodelay  # type: ignore[attr-defined]
        settings = dataclasses.replace(
            get_settings(),
            llm_base_url=server.base_url,
            llm_model=model,
            llm_concurrency=args.capacity,
            enrich_partitions=args.partitions,
            llm_rpm=RPM,
            llm_tpm=TPM,
            enrich_chunk_size=CHUNK,
            llm_timeout_s=30.0,
        )
        spec = resolve_extractor("llm", settings=settings)
        calls: list[tuple[float, float]] = []
        appends: list[tuple[float, float]] = []
        began = time.monotonic()
        with common.timed_calls(cache, "call_misses", calls), common.timed_calls(cache, "append", appends):
            run = run_extract_review_keywords(
                spark, day, day + timedelta(days=1), run_id="bench", spec=spec, settings=settings
            )
        ended = time.monotonic()
        records = list(server.records)
        over_capacity, max_in_flight, faults = server.over_capacity, server.max_in_flight, dict(server.faults)

    answered = [r for r in records if r.responded is not None]
    first_arrival = min(r.arrived for r in records)
    last_response = max(r.responded for r in answered)
    call_span = last_response - first_arrival
    achieved = len(records) / call_span
    profile = concurrency_profile(records, first_arrival, last_response)
    return {
        "requests_per_s": round(achieved, 2),
        "ratio": round(achieved / (args.capacity / args.latency), 3),
        "server_nodelay": nodelay,
        "server_requests": len(records),
        "server_faults": faults,
        "over_capacity_429": over_capacity,
        "max_in_flight": max_in_flight,
        "call_span_s": round(call_span, 3),
        "ideal_call_span_s": round(len(records) * args.latency / args.capacity, 3),
        "job_seconds": round(ended - began, 3),
        "job_start_to_first_request_s": round(first_arrival - began, 3),
        "last_response_to_job_end_s": round(ended - last_response, 3),
        # Where the job's wall time goes (driver clock; the server's clock is the same monotonic clock).
        "job_phases_s": {
            "before_call_misses": round(calls[0][0] - began, 3),
            "call_misses_start_to_first_request": round(first_arrival - calls[0][0], 3),
            "requests": round(call_span, 3),
            "last_response_to_cache_append": round(appends[0][0] - last_response, 3) if appends else None,
            "cache_append": round(sum(b - a for a, b in appends), 3),
            "after_call_misses": round(ended - calls[-1][1], 3),
        },
        "job_call_seconds": run.call_seconds,
        "job_sent": run.sent,
        "job_misses": run.misses,
        "job_usage": run.usage,
        "keyword_rows": run.keyword_rows,
        "quarantined": run.quarantined,
        "partitions_after_call_misses_start": by_partition(records, args.partitions, calls[0][0]),
        "in_flight_mean": round(statistics.fmean(profile), 2) if profile else 0,
        "in_flight_samples_every_0.25s": profile,
        **ramp(records, args.capacity),
        **gaps(records, args.latency),
        **turnaround(records, args.capacity),
    }


def _control_worker(
    base_url: str, model: str, version: str, texts: list[str], concurrency: int, start_at: float
) -> float:
    """One process of the no-Spark control: the job's extractor on its share; returns its CPU seconds."""
    from placerec.enrich.llm import KeywordExtractor

    extractor = KeywordExtractor(
        base_url=base_url, model=model, prompt_version=version, rpm=RPM, tpm=TPM, concurrency=concurrency
    )
    time.sleep(max(0.0, start_at - time.monotonic()))  # both processes start together (CLOCK_MONOTONIC)
    began = time.process_time()
    try:
        extractor.extract_many(texts)
    finally:
        extractor.close()
    return time.process_time() - began


def control_no_spark(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """The same client (KeywordExtractor.extract_many) in ``partitions`` plain processes, no Spark."""
    import multiprocessing

    from tests.fault_server import FaultServer

    from placerec.enrich.keywords import resolve_extractor

    version = resolve_extractor("llm").prompt_version  # the prompt the job uses
    per = max(1, args.capacity // args.partitions)
    texts = [f"{t} 대조군" for t in review_texts(args.reviews)]
    shares = [texts[i :: args.partitions] for i in range(args.partitions)]
    with FaultServer(latency_s=args.latency, max_concurrent=args.capacity, max_lifetime_s=600) as server:
        server._httpd.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
        start_at = time.monotonic() + 15.0  # time for the spawned processes to import openai
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds a JVM gateway
        with ctx.Pool(args.partitions) as pool:
            jobs = [(server.base_url, model, version, share, per, start_at) for share in shares]
            cpu = pool.starmap(_control_worker, jobs)
        records = list(server.records)
        over_capacity = server.over_capacity
    first_arrival = min(r.arrived for r in records)
    last_response = max(r.responded for r in records if r.responded)
    achieved = len(records) / (last_response - first_arrival)
    return {
        "requests_per_s": round(achieved, 2),
        "ratio": round(achieved / (args.capacity / args.latency), 3),
        "processes": args.partitions,
        "threads_per_process": per,
        "server_requests": len(records),
        "over_capacity_429": over_capacity,
        "client_cpu_ms_per_request": round(1000 * sum(cpu) / len(records), 2),
        **turnaround(records, args.capacity),
    }


def by_partition(records: list[Any], partitions: int, t0: float) -> list[dict[str, float]]:
    """Each Spark partition's first arrival, last response and request count, in seconds after ``t0``.

    ``call_misses`` sorts the misses by content hash and ``parallelize`` slices that list in order, so a
    request's partition follows from its review's hash; the prompt's boundary tag is that hash's prefix.
    """
    from tests.fault_server import review_of

    tagged = []
    for r in records:
        match = TAG.search(review_of(r.body))
        if match and r.responded is not None:
            tagged.append((match.group(1), r))
    tagged.sort(key=lambda x: x[0])
    n = len(tagged)
    out = []
    for i in range(partitions):
        part = [r for _, r in tagged[i * n // partitions : (i + 1) * n // partitions]]
        if part:
            out.append(
                {
                    "requests": len(part),
                    "first_arrival_s": round(min(r.arrived for r in part) - t0, 3),
                    "last_response_s": round(max(r.responded for r in part) - t0, 3),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.25, help="seconds the endpoint takes per request")
    parser.add_argument("--capacity", type=int, default=16, help="requests the endpoint admits at once")
    parser.add_argument("--partitions", type=int, default=2, help="Spark partitions calling at once")
    parser.add_argument("--reviews", type=int, default=1600, help="distinct reviews to send")
    args = parser.parse_args()
    common.quiet_logs()

    warm_day = datetime(2026, 10, 1, tzinfo=timezone.utc)
    days = {"warmup": warm_day, "measured": warm_day + timedelta(days=1), "stock_server": warm_day + timedelta(days=2)}
    stamp = int(time.time())
    with common.private_home(NAME) as home:
        from placerec.ingest.job import run_ingest
        from placerec.spark import get_spark

        started = time.monotonic()
        spark = get_spark("bench-enrich-throughput")
        spark_start_s = time.monotonic() - started
        try:
            landing = home / "landing"
            common.write_review_landing(landing, days["warmup"], review_texts(2 * args.capacity), "warm")
            common.write_review_landing(landing, days["measured"], review_texts(args.reviews), "tp")
            common.write_review_landing(landing, days["stock_server"], review_texts(args.reviews), "stock")
            run_ingest(spark, landing, warm_day, warm_day + timedelta(days=3), run_id="bench")
            # The first jobs of a session start Python workers, which import openai (see NOTES).
            warmup = call_phase(
                spark, days["warmup"], 2 * args.capacity, args, model=f"bench-warm-{stamp}", nodelay=True
            )
            measured = call_phase(spark, days["measured"], args.reviews, args, model=f"bench-tp-{stamp}", nodelay=True)
            stock = call_phase(
                spark, days["stock_server"], args.reviews, args, model=f"bench-stock-{stamp}", nodelay=False
            )
            control = control_no_spark(args, model=f"bench-control-{stamp}")
        finally:
            spark.stop()

    baseline = args.capacity / args.latency
    achieved = measured["requests_per_s"]
    ratio = achieved / baseline
    result: dict[str, Any] = {
        "name": NAME,
        "figure": achieved,
        "unit": "requests/s (server requests over first arrival → last response)",
        "baseline": round(baseline, 2),
        "baseline_is": "capacity / latency: the endpoint's ceiling, no client can exceed it",
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "params": {
            "latency_s": args.latency,
            "capacity": args.capacity,
            "partitions": args.partitions,
            "per_partition_concurrency": max(1, args.capacity // args.partitions),
            "reviews": args.reviews,
            "llm_rpm": RPM,
            "llm_tpm": TPM,
            "enrich_chunk_size": CHUNK,
            "server_nodelay": True,
        },
        "job_seconds": measured["job_seconds"],
        "over_capacity_429": measured["over_capacity_429"],
        "max_in_flight": measured["max_in_flight"],
        "spark_start_s": round(spark_start_s, 3),
        "measured": measured,
        "stock_server": stock,
        "control_no_spark": control,
        "warmup": {k: v for k, v in warmup.items() if k != "in_flight_samples_every_0.25s"},
        "notes": NOTES,
    }
    path = common.write_result(result)
    print(
        f"{NAME}: {achieved:.1f} req/s vs ceiling {baseline:.1f} req/s (ratio {ratio:.3f}, target ≥ {TARGET_RATIO}); "
        f"{measured['server_requests']} requests in {measured['call_span_s']:.1f} s, "
        f"job {measured['job_seconds']:.1f} s, "
        f"429 over capacity {measured['over_capacity_429']}, max in flight {measured['max_in_flight']}; "
        f"stock fault server (Nagle on): {stock['requests_per_s']:.1f} req/s (ratio {stock['ratio']:.3f}); "
        f"same client without Spark: {control['requests_per_s']:.1f} req/s (ratio {control['ratio']:.3f}) → {path}"
    )


if __name__ == "__main__":
    main()
