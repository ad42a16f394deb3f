"""The serving API under load on loopback: latency, errors, and every served impression in ``raw.events``.

Needs ``placerec dev up`` and a published model (``make demo``): the API answers from the demo's live
aliases. It runs ``placerec serve`` in a child process (two variants, ``model=live:50,control=popular:50``)
writing its impression log into a private landing folder, and ``placerec simulate-traffic``'s engine (the
demo world's users, clicking by their hidden tastes) against it: a warm-up (``--warmup`` s at 50/s: the
answer cache fills as a live server's would), then the measured phase (``--rate`` requests/s for
``--seconds`` s, open loop). The server is stopped (it seals its log), the landing folder is ingested by
the real ingest job into a private catalog (in-process Spark), and every request id the simulator was
answered with is counted in ``raw.events``: ``lost`` is served impressions missing there.

Baseline, same run: the same users' precomputed lists fetched straight from OpenSearch (``mget`` through
the Python client, one after another): the API's p50 against it is what serving adds (HTTP, variant,
logging) on top of the index.

Run: ``uv run --frozen python bench/serving.py [--rate 200 --seconds 60]`` (writes ``bench/results/serving.json``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import common


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(landing: Path, port: int) -> subprocess.Popen[bytes]:
    import httpx

    env = {
        **os.environ,
        "PLACEREC_HOME": str(common.SERVICE_HOME),
        "PLACEREC_LANDING_DIR": str(landing),
        "PLACEREC_SERVE_PORT": str(port),
        "PLACEREC_SERVE_VARIANTS": "model=live:50,control=popular:50",
    }
    proc = subprocess.Popen([sys.executable, "-m", "placerec.cli", "serve"], env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("placerec serve did not answer within 60 s: is `placerec dev up` running and a model published?")


def _direct_baseline(users: list[str], n: int) -> dict[str, float]:
    from placerec.serve import indices
    from placerec.serve.client import opensearch_client
    from placerec.settings import Settings

    s = Settings(home=common.SERVICE_HOME)
    client = opensearch_client(s)
    rng = random.Random(5)
    times = []
    for _ in range(n):
        began = time.perf_counter()
        client.mget(index=indices.alias_name(s, "recommendations"), body={"ids": [rng.choice(users)]})
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return {"requests": n, "p50_ms": round(times[n // 2], 2), "p99_ms": round(times[int(n * 0.99)], 2)}


def _count_ingested(landing: Path, request_ids: set[str], day: datetime) -> dict[str, int]:
    from pyspark.sql import functions as F

    from placerec.ingest.job import run_ingest
    from placerec.ops import read_at, snapshot_ids
    from placerec.spark import get_spark

    spark = get_spark("bench-serving")
    began = time.monotonic()
    run_ingest(spark, landing, day, day + timedelta(days=1), run_id="bench-serving")
    seconds = time.monotonic() - began
    rows = (
        read_at(spark, "raw.events", snapshot_ids(["raw.events"]))
        .where(F.col("source") == "serve")
        .groupBy("event_type")
        .agg(F.count("*").alias("n"), F.countDistinct("event_id").alias("ids"))
        .collect()
    )
    served = (
        read_at(spark, "raw.events", snapshot_ids(["raw.events"]))
        .where(F.col("event_type") == "impression")
        .select("request_id")
        .distinct()
        .toPandas()["request_id"]
    )
    found = set(served.tolist())
    return {
        **{f"{r['event_type']}s": int(r["n"]) for r in rows},
        "duplicate_event_ids": sum(int(r["n"]) - int(r["ids"]) for r in rows),
        "answered_requests_missing": len(request_ids - found),
        "ingest_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    common.quiet_logs()

    from placerec.demo.traffic import World, simulate
    from placerec.model.oracle import load_truth

    truth_dir = common.SERVICE_HOME / "landing" / "_truth"
    truth = load_truth(truth_dir)
    if truth is None:
        raise SystemExit(f"no demo world in {truth_dir}: run `make demo` first")
    with common.private_home("serving") as home:
        os.environ["PLACEREC_SPARK_REMOTE"] = "local"
        landing = Path(tempfile.mkdtemp(prefix="serving-landing-", dir=home))
        port = _free_port()
        day = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        if datetime.now(timezone.utc) > day + timedelta(hours=23, minutes=55):
            raise SystemExit("too close to midnight UTC: the traffic would straddle two days")
        server = _start_server(landing, port)
        url = f"http://127.0.0.1:{port}"
        try:
            warm = simulate(url, truth_dir, int(args.warmup * 50), 50.0, seed=1, concurrency=args.concurrency)
            load = simulate(
                url, truth_dir, int(args.seconds * args.rate), args.rate, seed=2, concurrency=args.concurrency
            )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        ids = set(warm.request_ids) | set(load.request_ids)
        served = warm.impressions + load.impressions
        ingested = _count_ingested(landing, ids, day)
        baseline = _direct_baseline(World(truth).user_ids, 2000)

    measured = load.summary()
    lost = served - ingested.get("impressions", 0)
    result = {
        "name": "serving",
        "setup": {
            "rate": args.rate,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "concurrency": args.concurrency,
            "variants": "model=live:50,control=popular:50",
            "k": 10,
        },
        "load": {k: v for k, v in measured.items() if k != "error_kinds"} | {"error_kinds": measured["error_kinds"]},
        "warmup": {"requests": warm.requests, "errors": warm.errors},
        "served_impressions": served,
        "ingested": ingested,
        "lost_impressions": lost,
        "baseline_opensearch_mget": baseline,
        "p50_vs_baseline": round(measured["p50_ms"] / baseline["p50_ms"], 2) if baseline["p50_ms"] else None,
        "targets": {
            "rate": f"{args.rate:g}/s for {args.seconds:g} s",
            "errors": 0,
            "lost_impressions": 0,
            "met": bool(
                load.errors == 0
                and warm.errors == 0
                and lost == 0
                and ingested["answered_requests_missing"] == 0
                and ingested["duplicate_event_ids"] == 0
                and measured["achieved_rps"] >= 0.97 * args.rate
            ),
        },
    }
    path = common.write_result(result)
    print(
        f"{measured['requests']} requests at {measured['achieved_rps']}/s: p50 {measured['p50_ms']} ms, "
        f"p99 {measured['p99_ms']} ms, {load.errors} errors; {served} impressions served, "
        f"{ingested.get('impressions', 0)} in raw.events ({lost} lost); baseline mget p50 {baseline['p50_ms']} ms "
        f"-> {path}"
    )


if __name__ == "__main__":
    main()
