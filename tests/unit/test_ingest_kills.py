"""An ingest run SIGKILLed after each of its commits and in the middle of each write (once with the Spark
driver itself): readers see the previous complete interval or the new complete one, never a mix, and the
rerun completes it.

The killed runs are child processes (``tests/fault_ingest.py``) on the same state folder: on this session's
Spark (the job's Connect client is killed), or with a classic Spark driver of their own that dies with them.
The reruns run here. Each step ingests a new version of one day, so "previous" and "new" differ in every table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from placerec.catalog import get_catalog
from placerec.ingest.commit import GOVERNED, last_commit
from placerec.ingest.job import run_ingest
from placerec.ops import read_at, snapshot_ids
from placerec.settings import PROJECT_ROOT

pytestmark = pytest.mark.reliability

START = datetime(2026, 12, 15, tzinfo=timezone.utc)
END = datetime(2026, 12, 16, tzinfo=timezone.utc)
DAY = "dt=2026-12-15"
IN_DAY = "event_ts >= '2026-12-15' AND event_ts < '2026-12-16'"


def write_version(root: Path, n: int) -> None:
    """Version ``n`` of the day: more events, a changed and a new review, a newer place name, one bad line."""

    def lines(feed: str, name: str, records: list[str]) -> None:
        folder = root / feed / DAY
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("".join(r + "\n" for r in records), encoding="utf-8")

    def event(eid: str) -> str:
        rec = {
            "event_id": eid,
            "event_type": "view",
            "ts": "2026-12-15T08:00:00+00:00",
            "user_id": "ku",
            "place_id": "kp1",
        }
        return json.dumps(rec)

    lines("events", "a.jsonl", [event(f"k-e{i}") for i in range(1, n + 3)] + ['{"broken'])
    lines("events", "b.jsonl", [event(f"k-b{n}")])
    review = {"place_id": "kp1", "user_id": "ku", "rating": 4, "ts": "2026-12-15T09:00:00+00:00"}
    lines(
        "reviews",
        "r.jsonl",
        [
            json.dumps({**review, "review_id": "k-r1", "text": f"버전 {n}"}, ensure_ascii=False),
            json.dumps({**review, "review_id": f"k-r{n + 1}", "text": f"새 리뷰 {n}"}, ensure_ascii=False),
        ],
    )
    place = {"place_id": "kp1", "name": f"이름 {n}", "updated_ts": f"2026-12-15T{n:02d}:00:00+00:00"}
    lines("places", "p.jsonl", [json.dumps(place, ensure_ascii=False)])


def expected(n: int) -> tuple:  # type: ignore[type-arg]
    """What readers must see once version ``n`` is in, by hand: reviews accumulate (a MERGE never deletes)."""
    events = sorted([f"k-e{i}" for i in range(1, n + 3)] + [f"k-b{n}"])
    reviews = sorted([("k-r1", f"버전 {n}")] + [(f"k-r{j + 1}", f"새 리뷰 {j}") for j in range(1, n + 1)])
    return events, reviews, [f"이름 {n}"], [(f"events/{DAY}/a.jsonl", n + 3, "invalid_json")]


def state(spark, committed: bool = True) -> tuple:  # type: ignore[no-untyped-def,type-arg]
    """The day as readers see it (at the last ingest commit), or the tables' current state."""
    snaps = snapshot_ids(list(GOVERNED))

    def table(name: str):  # type: ignore[no-untyped-def]
        return read_at(spark, name, snaps) if committed else spark.table(name)

    events = sorted(r[0] for r in table("raw.events").where(IN_DAY).select("event_id").collect())
    reviews = sorted(
        tuple(r) for r in table("raw.reviews").where("review_id LIKE 'k-%'").select("review_id", "text").collect()
    )
    places = [r[0] for r in table("raw.places").where("place_id = 'kp1'").select("name").collect()]
    q = spark.table("raw.quarantine").where(f"job = 'ingest_events' AND interval_start = '{START.isoformat()}'")
    quarantine = sorted(tuple(r) for r in q.select("source_file", "source_line", "reason").collect())
    return events, reviews, places, quarantine


def killed_run(
    landing: Path, when: str, step: str, delay: float = 0.0, road: str = "connect"
) -> subprocess.CompletedProcess[str]:
    """The faulted run in a child process of its own group. ``connect``: the job's client on this session's
    Spark (the server lives on, and may finish the query it was sent); ``classic``: a Spark driver in the
    child itself (512 MB heap), killed with it in the middle of its work."""
    argv = [sys.executable, "tests/fault_ingest.py", str(landing), START.isoformat(), END.isoformat(), when, step]
    env = dict(os.environ)
    if road == "classic":  # not the Connect mode pyspark marks in the environment once a process has used it
        env = {k: v for k, v in env.items() if k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
        env |= {"PLACEREC_SPARK_REMOTE": "classic", "PLACEREC_SPARK_DRIVER_MEMORY": "512m"}
    return subprocess.run(
        [*argv, str(delay)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )


def settle(identifier: str = "raw.events", quiet_seconds: float = 3.0, limit: float = 60.0) -> None:
    """Wait until a table's snapshot stops moving: a killed client's query may still finish on the server."""
    last, since, deadline = None, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        snap = get_catalog().load_table(identifier).current_snapshot()
        current = snap.snapshot_id if snap else None
        if current != last:
            last, since = current, time.monotonic()
        elif time.monotonic() - since > quiet_seconds:
            return
        time.sleep(0.3)


# (version, when, step, what readers may see after the kill: the version before and/or this one, Spark road)
FAULTS = [
    (2, "after", "load_events", {1}, "connect"),
    (3, "after", "merge:raw.reviews", {2}, "connect"),
    (4, "after", "merge:raw.places", {3}, "connect"),
    (5, "during", "load_events", {4}, "connect"),
    (6, "during", "merge:raw.reviews", {5}, "connect"),
    (7, "during", "merge:raw.places", {6}, "connect"),
    # the commit itself cut short: the server may still finish it after its client died
    (8, "during", "write_quarantine", {7, 8}, "connect"),
    (9, "after", "write_quarantine", {9}, "connect"),
    (10, "after", "record_metrics", {10}, "connect"),
    # the Spark driver itself SIGKILLed while it writes (each costs a JVM start: ~50 s, so only one)
    (11, "during", "load_events", {10}, "classic"),
]
WRITES = {"load_events": "raw.events", "merge:raw.reviews": "raw.reviews", "merge:raw.places": "raw.places"}


def test_a_killed_ingest_leaves_one_complete_interval_visible(spark, tmp_path: Path, record_property) -> None:  # type: ignore[no-untyped-def]
    landing = tmp_path / "landing"
    write_version(landing, 1)
    run_ingest(spark, landing, START, END, run_id="v1")
    assert state(spark) == expected(1) == state(spark, committed=False)
    for version, when, step, seen, road in FAULTS:
        write_version(landing, version)
        proc = killed_run(landing, when, step, delay=0.3, road=road)
        assert proc.returncode == -9, (step, proc.returncode, proc.stderr[-2000:])
        if when == "during":
            settle(WRITES.get(step, "raw.quarantine"))
        assert state(spark) in [expected(v) for v in seen], (version, step)
        if step == "load_events" and when == "after":  # the kill came after a real write readers do not see
            assert state(spark, committed=False)[0] == expected(version)[0]
        result = run_ingest(spark, landing, START, END, run_id=f"v{version}")
        assert state(spark) == expected(version) == state(spark, committed=False), (version, step)
        if version not in seen and when == "after":  # the killed run's writes were put back before the rerun's
            assert result.restored, (version, step)
        commit = last_commit()
        assert commit is not None and commit.run_id == f"v{version}"
    record_property("faults_injected", len(FAULTS))  # each: a SIGKILL, then checked and rerun
    record_property("faults_survived", len(FAULTS))
    record_property("rows_lost", 0)  # every state compared row by row with the hand-made expectation
