"""The serving loop on real parts: ``placerec serve`` (a uvicorn process) over the real OpenSearch node,
its impression log in a landing area, the real ingest job (Spark, Iceberg) taking it into ``raw.events``.

Indices are built here under a prefix of their own (two publish versions, aliases on the first), so the
demo's aliases are never touched. The server is killed with SIGKILL mid-traffic and started again: every
answer it gave before the kill is in ``raw.events`` after ingest, no line is half-written, and ingesting
the day again (the daily batch after the stream's micro-batches), or after an ingest killed mid-write,
gives the same counts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from placerec.ingest.job import run_ingest
from placerec.serve import indices
from placerec.serve.client import opensearch_client
from placerec.serve.online import ctr_by_variant, record_ctr, served_events
from placerec.serve.variants import assign, parse_variants
from placerec.settings import PROJECT_ROOT, Settings, get_settings

pytestmark = pytest.mark.integration

DIM = 16
VARIANTS = "model=live:40,control=popular:30,next=v2:30"
SALT = "loop-test"
WARM = [f"w{i:03d}" for i in range(40)]
COLD = [f"c{i:03d}" for i in range(10)]  # interests only
PLACES = [f"sp{i:03d}" for i in range(60)]


@pytest.fixture(autouse=True)
def service_home(unit_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Here the catalog is the private one of the session's Spark (the node is the real, shared one)."""
    monkeypatch.setenv("PLACEREC_HOME", str(unit_home))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def built(unit_home: Path) -> Iterator[dict[str, Any]]:
    """Two versions of the three indices under a private prefix; the aliases on ``v1``."""
    prefix = f"servetest-{uuid.uuid4().hex[:8]}"
    s = Settings(home=unit_home, index_prefix=prefix)
    client = opensearch_client(s)
    rng = np.random.default_rng(3)
    vectors = {p: rng.normal(size=DIM).round(4).tolist() for p in PLACES}
    for version in ("v1", "v2"):
        for family in indices.FAMILIES:
            name = indices.index_name(s, family, version)
            client.indices.create(
                index=name,
                body={
                    "settings": indices.build_settings(s, {"type": "cjk"}),
                    "mappings": indices.mappings(family, DIM, s),
                },
            )
        ops = []
        for n, p in enumerate(PLACES):
            ops += [
                {"index": {"_index": indices.index_name(s, "places", version), "_id": p}},
                {
                    "place_id": p,
                    "name": f"가게 {n}",
                    "category": ("카페", "한식")[n % 2],
                    "district": ("성수동", "연남동", "여의도")[n % 3],
                    "keywords": ["커피", "조용한"],
                    "praised": ["조용한"],
                    "popularity": float(100 - n),
                    "embedding": vectors[p],
                },
            ]
        for n, u in enumerate(WARM):
            items = [
                {
                    "place_id": PLACES[(n + j) % 60],
                    "name": "x",
                    "category": "카페",
                    "district": "성수동",
                    "score": 9 - j,
                    "reason": ["조용한"],
                }
                for j in range(10)
            ]
            ops += [
                {"index": {"_index": indices.index_name(s, "recommendations", version), "_id": u}},
                {
                    "user_id": u,
                    "model_version": f"hybrid-{version}",
                    "place_ids": [i["place_id"] for i in items],
                    "items": items,
                },
            ]
        for u in COLD:
            ops += [
                {"index": {"_index": indices.index_name(s, "users", version), "_id": u}},
                {"user_id": u, "keywords": ["조용한"], "embedding": vectors[PLACES[7]]},
            ]
        client.bulk(body=ops, refresh=True)
    client.indices.update_aliases(
        body={
            "actions": [
                {"add": {"index": indices.index_name(s, f, "v1"), "alias": indices.alias_name(s, f)}}
                for f in indices.FAMILIES
            ]
        }
    )
    yield {"settings": s, "client": client}
    client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)


class Server:
    """``placerec serve`` in a child process of its own on a free loopback port."""

    def __init__(self, s: Settings, landing: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PLACEREC_HOME": str(s.home),
            "PLACEREC_LANDING_DIR": str(landing),
            "PLACEREC_INDEX_PREFIX": s.index_prefix,
            "PLACEREC_SERVE_PORT": str(self.port),
            "PLACEREC_SERVE_VARIANTS": VARIANTS,
            "PLACEREC_SERVE_SALT": SALT,
            "PLACEREC_SERVE_ROTATE_S": "600",  # sealed only by the kill's recovery or the stop
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "placerec.cli", "serve"], env=env, cwd=PROJECT_ROOT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.proc.kill()
        raise AssertionError("placerec serve did not answer /health within 60 s")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def _day() -> tuple[datetime, datetime]:
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def _served_in_raw(spark: Any, request_ids: set[str]) -> Counter[str]:
    from pyspark.sql import functions as F

    from placerec.ops import read_at, snapshot_ids

    rows = (
        read_at(spark, "raw.events", snapshot_ids(["raw.events"]))
        .where(F.col("source") == "serve")
        .select("event_type", "request_id", "event_id")
        .collect()
    )
    assert len({r["event_id"] for r in rows}) == len(rows), "an event counted twice"
    return Counter(r["event_type"] for r in rows if r["request_id"] in request_ids)


def test_served_answers_are_logged_killed_or_not_and_ingested_exactly_once(
    built: dict[str, Any], spark: Any, tmp_path: Path
) -> None:
    if datetime.now(timezone.utc).hour == 23 and datetime.now(timezone.utc).minute >= 55:
        pytest.skip("the test's traffic would straddle midnight UTC")
    s, landing = built["settings"], tmp_path / "landing"
    variants = parse_variants(VARIANTS)
    server = Server(s, landing)
    served: dict[str, dict[str, Any]] = {}
    clicks = 0
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            health = http.get("/health").json()
            assert [v["name"] for v in health["variants"]] == ["model", "control", "next"]
            assert {assign(u, variants, SALT).name for u in WARM} == {"model", "control", "next"}
            for user in [*WARM, *COLD, "nobody-1", "nobody-2"]:
                answer = http.get("/recommendations", params={"user": user, "k": 5}).json()
                served[answer["request_id"]] = answer
                want = assign(user, variants, SALT).name
                assert answer["variant"] == want, user
                expected = (
                    "popular"
                    if want == "control" or user.startswith("nobody")
                    else "precomputed"
                    if user in WARM
                    else "interests"
                )
                assert answer["source"] == expected, (user, answer["source"])
                assert len(answer["items"]) == 5 and [i["position"] for i in answer["items"]] == [1, 2, 3, 4, 5]
                if answer["source"] == "precomputed":  # the live aliases (v1), or v2's own indices beside them
                    assert answer["model_version"] == ("hybrid-v2" if want == "next" else "hybrid-v1")
                if answer["items"] and user in WARM[:20]:
                    first = answer["items"][0]
                    body = {
                        "event_type": "click",
                        "user_id": user,
                        "place_id": first["place_id"],
                        "request_id": answer["request_id"],
                        "position": 1,
                    }
                    assert http.post("/feedback", json=body).status_code == 200
                    clicks += 1
            # filters reach the index: a district asked for is the only one answered
            popular = http.get("/recommendations", params={"user": "nobody-3", "k": 5, "district": "여의도"}).json()
            served[popular["request_id"]] = popular
            assert popular["items"] and {i["district"] for i in popular["items"]} == {"여의도"}
            # bad input: a clear 422, nothing logged
            for params in ({"user": "", "k": 5}, {"user": "x", "k": 0}, {"user": "x", "k": 10_000}):
                bad = http.get("/recommendations", params=params)
                assert bad.status_code == 422 and "error" in bad.json()
            for body in (
                b"\xff\xfe",
                b'{"event_type": "buy", "user_id": "u"}',
                b"[]",
                b'{"event_type": "click", "user_id": "u", "place_id": "p", "position": -1}',
                b'{"event_type": "click", "user_id": "u", "place_id": "p", "ts": "1999-01-01"}',
            ):
                bad = http.post("/feedback", content=body)
                assert bad.status_code == 422 and bad.json()["error"], body
        server.kill()  # SIGKILL: the open part file is left behind, unsealed
        parts = list(landing.glob("events/dt=*/.serve-*.jsonl.part"))
        assert parts, "the killed server's log should still be a part file"
        # the next server seals what the dead one left
        server = Server(s, landing)
        assert not list(landing.glob("events/dt=*/.serve-*.jsonl.part"))
        with httpx.Client(base_url=server.url, timeout=30) as http:
            late = http.get("/recommendations", params={"user": WARM[0], "k": 3}).json()
            served[late["request_id"]] = late
    finally:
        server.stop()

    lines = [json.loads(line) for f in landing.glob("events/dt=*/*.jsonl") for line in f.read_text().splitlines()]
    impressions = sum(len(a["items"]) for a in served.values())
    assert Counter(r["event_type"] for r in lines) == {"impression": impressions, "click": clicks}
    assert {r["request_id"] for r in lines} == set(served)

    start, end = _day()
    run_ingest(spark, landing, start, end, run_id="stream-1")
    counts = _served_in_raw(spark, set(served))
    assert counts == {"impression": impressions, "click": clicks}
    # the day again, as the daily batch after the stream's micro-batches: not one event twice
    run_ingest(spark, landing, start, end, run_id="batch")
    assert _served_in_raw(spark, set(served)) == counts
    # an ingest SIGKILLed mid-write, then its retry: the same counts
    child = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "tests" / "fault_ingest.py"),
            str(landing),
            start.isoformat(),
            end.isoformat(),
            "during",
            "load_events",
            "0.5",
        ],
        env=dict(os.environ),
        timeout=600,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL
    run_ingest(spark, landing, start, end, run_id="retry")
    assert _served_in_raw(spark, set(served)) == counts

    # online CTR from what was ingested: the clicks land on the variants that showed them
    table = {r.variant: r for r in ctr_by_variant(served_events(start, end, get_settings()), ["model", "control"])}
    assert [m for m in table["next"].model_versions if m] == ["hybrid-v2"]
    assert table["control"].model_versions == ["popularity"]
    shown = Counter(a["variant"] for a in served.values() for _ in a["items"])
    assert {v: r.impressions for v, r in table.items()} == dict(shown)
    clicked = sum(r.clicks for r in table.values())
    assert clicked == clicks
    for r in table.values():
        assert r.low <= r.ctr <= r.high
    # recorded for the interval: a rerun replaces the interval's rows, never adds to them
    from placerec.catalog import get_catalog

    rows = list(table.values())
    for _ in range(2):
        record_ctr(rows, start, end, get_settings())
    stored = get_catalog().load_table("ops.online_ctr").scan(row_filter=f"interval_start = '{start.isoformat()}'")
    got = {r["variant"]: (r["impressions"], r["clicks"]) for r in stored.to_arrow().to_pylist()}
    assert got == {r.variant: (r.impressions, r.clicks) for r in rows} and len(stored.to_arrow()) == len(rows)
