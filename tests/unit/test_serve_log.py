"""The serving API's parts that need no index: the crash-safe event log, variants, online CTR."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from placerec.ingest.files import list_landing
from placerec.ingest.records import validate_line
from placerec.serve.eventlog import EventLog, recover
from placerec.serve.online import ctr_by_variant
from placerec.serve.variants import assign, bucket, parse_variants

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)


def _lines(landing: Path) -> list[dict[str, object]]:
    return [json.loads(x) for f in sorted(landing.glob("events/dt=*/*.jsonl")) for x in f.read_text().splitlines()]


def test_lines_are_read_by_ingest_only_once_sealed(tmp_path: Path) -> None:
    log = EventLog(tmp_path, rotate_s=3600)
    log.write([{"event_id": "e1", "ts": NOW}], NOW)
    day = tmp_path / "events" / "dt=2026-12-04"
    listing = list_landing(tmp_path, "events", NOW.replace(hour=0), NOW.replace(hour=0) + timedelta(days=1))
    assert listing.read == () and [s.reason for s in listing.skipped] == ["temp_file"]
    log.close()
    assert [p.name for p in day.iterdir() if not p.name.startswith(".")] and not list(day.glob(".*"))
    assert _lines(tmp_path) == [{"event_id": "e1", "ts": NOW.isoformat()}]


def test_a_new_day_or_an_old_file_seals_the_open_one(tmp_path: Path) -> None:
    log = EventLog(tmp_path, rotate_s=0.2)
    log.write([{"n": 1}], NOW)
    log.write([{"n": 2}], NOW + timedelta(days=1))  # the day turned: the first day's file is sealed
    assert len(list((tmp_path / "events" / "dt=2026-12-04").glob("serve-*.jsonl"))) == 1
    time.sleep(0.3)
    log.rotate()  # quiet for longer than rotate_s: sealed without a write
    assert len(list((tmp_path / "events" / "dt=2026-12-05").glob("serve-*.jsonl"))) == 1
    assert not list(tmp_path.glob("events/dt=*/.serve-*"))
    log.close()


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from pathlib import Path
    from placerec.serve.eventlog import EventLog
    log = EventLog(Path(sys.argv[1]), rotate_s=3600)
    now = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
    n = 0
    while True:
        log.write([{"seq": n + j, "pad": "x" * 300} for j in range(50)], now)
        n += 50
        if n == 5000:
            print("ready", flush=True)
    """
)


def test_a_writer_killed_mid_write_leaves_only_whole_lines_in_order(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert list(tmp_path.glob("events/dt=*/.serve-*.jsonl.part")), "the dead writer's file is still open"
    sealed = recover(tmp_path)
    assert len(sealed) == 1 and not list(tmp_path.glob("events/dt=*/.serve-*"))
    seqs = [int(r["seq"]) for r in _lines(tmp_path)]  # every line parses: none half-written
    assert len(seqs) >= 5000 and seqs == list(range(len(seqs)))


def test_recovery_drops_a_cut_short_last_line_and_leaves_live_writers_alone(tmp_path: Path) -> None:
    day = tmp_path / "events" / "dt=2026-12-04"
    day.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (day / f".serve-{pid}-ab-000001.jsonl.part").write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "cut')
    (day / f".serve-{pid}-ab-000002.jsonl.part").write_bytes(b'{"only": "cut')
    mine = day / f".serve-{os.getpid()}-cd-000001.jsonl.part"
    mine.write_bytes(b'{"live": 1}\n')
    recover(tmp_path)
    assert _lines(tmp_path) == [{"a": 1}, {"a": 2}]
    assert mine.exists(), "a running writer's file is its own"
    assert not (day / f"serve-{pid}-ab-000002.jsonl").exists(), "nothing whole: no file"


def test_variants_parse_and_refuse_clearly() -> None:
    got = parse_variants(" model=live:70 , control=popular:30 ,v2=v20261204-abc:0.5")
    assert [(v.name, v.source, v.share) for v in got] == [
        ("model", "live", 70.0),
        ("control", "popular", 30.0),
        ("v2", "v20261204-abc", 0.5),
    ]
    for bad, message in [
        ("", "none given"),
        ("model=live", "name=source:share"),
        ("model=live:x", "not a number"),
        ("model=live:0", "positive"),
        ("model=live:nan", "positive"),
        ("model=live:-1", "positive"),
        ("a b=live:1", "name=source:share"),
        ("m=live:1,m=popular:1", "twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_variants(bad)


def test_assignment_is_stable_follows_the_shares_and_moves_with_the_salt() -> None:
    variants = parse_variants("model=live:70,control=popular:30")
    users = [f"u{i:06d}" for i in range(20_000)]
    first = [assign(u, variants, "s1").name for u in users]
    assert first == [assign(u, variants, "s1").name for u in users]
    share = first.count("model") / len(users)
    assert 0.68 < share < 0.72, share
    other = [assign(u, variants, "s2").name for u in users]
    moved = sum(a != b for a, b in zip(first, other, strict=True)) / len(users)
    assert 0.35 < moved < 0.49, moved  # 2 · 0.7 · 0.3 = 0.42 expected for independent salts
    assert all(0.0 <= bucket(u, "s1") < 1.0 for u in users[:100])


def _events(rows: list[tuple[str, str, str, str, str]]) -> dict[str, list[object]]:
    names = ("event_type", "user_id", "place_id", "request_id", "variant")
    cols: dict[str, list[object]] = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    cols["model_version"] = ["m1" if v == "A" else "" for v in cols["variant"]]
    return cols


def test_ctr_counts_each_shown_item_once_and_only_clicks_on_what_was_shown() -> None:
    rows = [
        ("impression", "u1", "p1", "r1", "A"),
        ("impression", "u1", "p1", "r1", "A"),  # the same item of the same answer: once
        ("impression", "u1", "p2", "r1", "A"),
        ("click", "u1", "p1", "r1", None),
        ("click", "u1", "p1", "r1", None),  # two clicks on one shown item: one clicked impression
        ("click", "u1", "p9", "r1", None),  # never shown in r1: not a click on an impression
        ("impression", "u2", "p1", "r2", "B"),
        ("impression", "u3", "p1", "r3", "B"),
        ("click", "u3", "p1", "r3", None),
    ]
    table = ctr_by_variant(_events(rows), ["B", "A"])
    assert [(r.variant, r.impressions, r.clicks, r.users, r.requests) for r in table] == [
        ("B", 2, 1, 2, 2),
        ("A", 2, 1, 1, 1),
    ]
    assert table[0].diff is None and table[1].diff == pytest.approx(0.0)
    assert table[1].model_versions == ["m1"]


def test_ctr_interval_covers_a_known_difference() -> None:
    import random

    rng = random.Random(1)
    rows = []
    for variant, p in (("A", 0.10), ("B", 0.15)):
        for u in range(400):
            for j in range(10):
                rows.append(("impression", f"{variant}{u}", f"p{j}", f"{variant}{u}", variant))
                if rng.random() < p:
                    rows.append(("click", f"{variant}{u}", f"p{j}", f"{variant}{u}", None))
    a, b = ctr_by_variant(_events(rows), ["A", "B"])
    assert a.low < 0.10 < a.high and b.low < 0.15 < b.high
    assert b.diff_low is not None and b.diff_high is not None and 0 < b.diff_low < 0.05 < b.diff_high


def test_served_fields_pass_ingest_validation_and_bad_ones_are_refused() -> None:
    day = NOW.replace(hour=0)
    base = {"event_id": "e", "event_type": "impression", "ts": NOW.isoformat(), "user_id": "u", "place_id": "p"}
    ok = validate_line(
        "events", json.dumps({**base, "request_id": "r", "variant": "A"}).encode(), day, NOW + timedelta(days=1)
    )
    assert ok.values is not None and ok.values[-3:] == ("r", None, "A")
    bad = validate_line("events", json.dumps({**base, "variant": 7}).encode(), day, NOW + timedelta(days=1))
    assert bad.values is None and bad.reason == "invalid_type"


def test_the_api_answers_503_without_secrets_when_opensearch_is_down_and_still_takes_feedback(tmp_path: Path) -> None:
    import dataclasses
    import socket

    from fastapi.testclient import TestClient

    from placerec.serve.api import create_app
    from placerec.settings import get_settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    secret = "pw-" + os.urandom(6).hex()
    s = dataclasses.replace(
        get_settings(),
        home=tmp_path,
        landing_dir=str(tmp_path / "landing"),
        opensearch_url=f"http://127.0.0.1:{port}",
        opensearch_user="admin",
        opensearch_password=secret,
        opensearch_timeout_s=2.0,
    )
    with TestClient(create_app(s)) as client:
        down = client.get("/recommendations", params={"user": "u1"})
        assert down.status_code == 503 and "cannot answer" in down.json()["error"]
        assert secret not in down.text and "admin" not in down.text
        ok = client.post("/feedback", json=[{"event_type": "click", "user_id": "u1", "place_id": "p1"}])
        assert ok.status_code == 200 and ok.json()["accepted"] == 1
    lines = _lines(tmp_path / "landing")
    assert [(r["event_type"], r["user_id"], r["source"]) for r in lines] == [("click", "u1", "serve")]
