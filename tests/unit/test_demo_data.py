"""Demo generator and NSMC mapper: the landing contract, malformed-record truth, determinism, realism."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from placerec.demo import generate, import_nsmc_landing
from placerec.demo import vocab as V
from placerec.demo.nsmc import load_titles
from placerec.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

START = date(2026, 3, 6)  # a Friday: one weekday and one weekend day
SMALL: dict[str, Any] = dict(start=START, days=2, seed=11, places=50, users=100, events=3000)
EVENT_TYPES = {"impression", "view", "click", "save", "navigate", "visit", "review", "search"}
HANGUL = re.compile("[가-힣]")
NSMC_DIR = PROJECT_ROOT.parent / "shared" / "data" / "nsmc"


# ------------------------------------------------------------------ an independent reading of the contract


def _str_field(obj: dict[str, Any], name: str, required: bool, problems: list[str]) -> None:
    value = obj.get(name)
    if value is None:
        if required:
            problems.append("missing_field")
    elif not isinstance(value, str):
        problems.append("invalid_type")
    elif required and not value.strip():
        problems.append("missing_field")


def _int_field(obj: dict[str, Any], name: str, required: bool, problems: list[str]) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            problems.append("missing_field")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append("invalid_type")
        return None
    return value


def _ts_field(obj: dict[str, Any], name: str, start: datetime, end: datetime, problems: list[str]) -> None:
    value = obj.get(name)
    if not isinstance(value, str):
        return
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        problems.append("invalid_timestamp")
        return
    if parsed.tzinfo is None:
        problems.append("invalid_timestamp")
    elif not start <= parsed < end:
        problems.append("out_of_interval")


def problems_of(feed: str, line: str, start: datetime, end: datetime, rating_max: int = 5) -> list[str]:
    """Every contract rule ``line`` breaks (all of them, not the first): [] means valid."""
    try:
        obj = json.loads(line)
    except ValueError:
        return ["invalid_json"]
    if not isinstance(obj, dict):
        return ["invalid_json"]
    problems: list[str] = []
    if feed == "events":
        for name in ("event_id", "event_type", "ts", "user_id"):
            _str_field(obj, name, True, problems)
        etype = obj.get("event_type")
        known = etype in EVENT_TYPES
        if isinstance(etype, str) and etype.strip() and not known:
            problems.append("unknown_event_type")
        _str_field(obj, "place_id", known and etype != "search", problems)
        _str_field(obj, "query", etype == "search", problems)
        _str_field(obj, "review_id", etype == "review", problems)
        for name in ("session_id", "device"):
            _str_field(obj, name, False, problems)
        rating = _int_field(obj, "rating", etype == "review", problems)
        if rating is not None and not 1 <= rating <= rating_max:
            problems.append("invalid_value")
        position = _int_field(obj, "position", False, problems)
        if position is not None and position < 1:
            problems.append("invalid_value")
        _ts_field(obj, "ts", start, end, problems)
    elif feed == "reviews":
        for name in ("review_id", "place_id", "user_id", "text", "ts"):
            _str_field(obj, name, True, problems)
        rating = _int_field(obj, "rating", True, problems)
        if rating is not None and not 1 <= rating <= rating_max:
            problems.append("invalid_value")
        if isinstance(obj.get("text"), str) and len(obj["text"]) > 2000:
            problems.append("oversized_text")
        _ts_field(obj, "ts", start, end, problems)
    else:
        for name in ("place_id", "name"):
            _str_field(obj, name, True, problems)
        for name in ("category", "district", "address", "updated_ts"):
            _str_field(obj, name, False, problems)
        for name, limit in (("lat", 90.0), ("lon", 180.0)):
            value = obj.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append("invalid_type")
            elif not -limit <= value <= limit:
                problems.append("invalid_value")
        _ts_field(obj, "updated_ts", start, end, problems)
    return problems


def _interval(dt_folder: str) -> tuple[datetime, datetime]:
    day = date.fromisoformat(dt_folder.removeprefix("dt="))
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _read_landing(root: Path) -> dict[str, list[tuple[str, str, int, str]]]:
    """feed → [(dt folder, file relative to root, 1-based line, text)] in delivery order."""
    out: dict[str, list[tuple[str, str, int, str]]] = {}
    for feed in ("events", "reviews", "places"):
        rows = []
        for folder in sorted((root / feed).iterdir()):
            for path in sorted(folder.glob("*.jsonl")):
                rel = path.relative_to(root).as_posix()
                for i, text in enumerate(path.read_text(encoding="utf-8").split("\n")[:-1], start=1):
                    rows.append((folder.name, rel, i, text))
        out[feed] = rows
    return out


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("demo") / "landing"
    manifest = generate(root, **SMALL, max_lines_per_file=1000)  # small parts: several files per day
    return root, manifest


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A high malformed rate, so that the small review and place feeds carry every kind."""
    root = tmp_path_factory.mktemp("noisy") / "landing"
    generate(root, **{**SMALL, "seed": 5}, malformed_rate=0.3, max_lines_per_file=700)
    return root


def _truth(root: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(s) for s in (root / "_truth" / name).read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------------- layout


def test_layout_and_line_format(small: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = small
    for feed in ("events", "reviews", "places"):
        assert sorted(p.name for p in (root / feed).iterdir()) == ["dt=2026-03-06", "dt=2026-03-07"]
        for folder in (root / feed).iterdir():
            names = sorted(p.name for p in folder.iterdir())
            assert names == [f"{feed}-{i:04d}.jsonl" for i in range(len(names))]
            for path in folder.iterdir():
                data = path.read_bytes()
                assert data.endswith(b"\n") and b"\r" not in data
                text = data.decode("utf-8")
                assert len(text.split("\n")) - 1 <= 1000
                assert "\\u" not in text  # Korean written as is
    assert manifest["counts"]["events"]["2026-03-06"]["files"] >= 2
    for name in ("users.jsonl", "review_aspects.jsonl", "malformed.jsonl", "manifest.json"):
        assert (root / "_truth" / name).is_file()
    assert json.loads((root / "_truth" / "manifest.json").read_text()) == manifest


def test_deterministic_and_rerun_replaces_only_its_days(small: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = small
    other = tmp_path / "landing"
    generate(other, **SMALL, max_lines_per_file=1000)
    assert _tree_bytes(other) == _tree_bytes(root)

    stray = other / "events" / "dt=2026-03-06" / "events-0099.jsonl"
    stray.write_text("{}\n")
    kept = other / "events" / "dt=2026-03-01" / "events-0000.jsonl"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}\n")
    generate(other, **SMALL, max_lines_per_file=1000)
    assert not stray.exists() and kept.read_text() == "{}\n"
    kept.unlink()
    kept.parent.rmdir()
    assert _tree_bytes(other) == _tree_bytes(root)

    changed = tmp_path / "seed12"
    generate(changed, **{**SMALL, "seed": 12}, max_lines_per_file=1000)
    assert _tree_bytes(changed) != _tree_bytes(root)


# ---------------------------------------------------------------------------------------------- malformed


def _check_malformed_truth(root: Path) -> Counter[tuple[str, str]]:
    """Every truth line is malformed exactly as stated; every other line is valid. Returns (feed, reason) counts."""
    truth = {(m["file"], m["line"]): m for m in _truth(root, "malformed.jsonl")}
    seen: Counter[tuple[str, str]] = Counter()
    found = 0
    for feed, rows in _read_landing(root).items():
        first_seen: dict[tuple[str, str], tuple[str, int, str]] = {}
        id_field = {"events": "event_id", "reviews": "review_id", "places": "place_id"}[feed]
        for folder, rel, line_no, text in rows:
            start, end = _interval(folder)
            expected = truth.get((rel, line_no))
            problems = problems_of(feed, text, start, end)
            if expected and expected["reason"] == "duplicate_id":
                assert problems == [], (rel, line_no, problems)
                key = (folder, json.loads(text)[id_field])
                assert key in first_seen, f"{rel}:{line_no} duplicate of nothing earlier"
                earlier_file, earlier_line, earlier_text = first_seen[key]
                assert earlier_text == text  # verbatim re-delivery
                assert (earlier_file, earlier_line) < (rel, line_no)
                assert expected["id"] == key[1]
            elif expected:
                assert problems == [expected["reason"]], (rel, line_no, expected, problems, text[:300])
            else:
                assert problems == [], (rel, line_no, problems, text[:300])
                key = (folder, json.loads(text)[id_field])
                assert key not in first_seen, f"{rel}:{line_no} repeats an id but is not in the truth"
                first_seen[key] = (rel, line_no, text)
            if expected:
                found += 1
                seen[(feed, expected["reason"])] += 1
                assert expected["feed"] == feed
    assert found == len(truth)
    return seen


def test_malformed_truth_is_exact(small: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = small
    seen = _check_malformed_truth(root)
    event_reasons = {r for f, r in seen if f == "events"}
    assert event_reasons == {
        "invalid_json",
        "missing_field",
        "invalid_type",
        "unknown_event_type",
        "invalid_timestamp",
        "out_of_interval",
        "duplicate_id",
        "invalid_value",
    }
    for feed, totals in manifest["totals"].items():
        assert totals["lines"] == totals["valid"] + totals["malformed"]
        assert sum(n for (f, _), n in seen.items() if f == feed) == totals["malformed"]
    events = manifest["totals"]["events"]
    assert 0.006 <= events["malformed"] / events["valid"] <= 0.015
    assert abs(events["valid"] - SMALL["events"]) <= 0.05 * SMALL["events"]


def test_every_kind_in_every_feed(noisy: Path) -> None:
    seen = _check_malformed_truth(noisy)
    kinds = defaultdict(set)
    for feed, reason in seen:
        kinds[feed].add(reason)
    assert kinds["reviews"] == {
        "invalid_json",
        "missing_field",
        "invalid_type",
        "invalid_timestamp",
        "out_of_interval",
        "duplicate_id",
        "invalid_value",
        "oversized_text",
    }
    assert kinds["places"] == {
        "invalid_json",
        "missing_field",
        "invalid_type",
        "invalid_timestamp",
        "out_of_interval",
        "duplicate_id",
        "invalid_value",
    }
    oversized = [m for m in _truth(noisy, "malformed.jsonl") if m["reason"] == "oversized_text"]
    sizes = []
    for m in oversized:
        line = (noisy / m["file"]).read_text(encoding="utf-8").split("\n")[m["line"] - 1]
        sizes.append(len(line.encode("utf-8")))
    assert all(10_000 <= s <= 110_000 for s in sizes), sizes


def test_duplicates_both_in_same_file_and_in_a_later_part(noisy: Path) -> None:
    dups = [m for m in _truth(noisy, "malformed.jsonl") if m["reason"] == "duplicate_id" and m["feed"] == "events"]
    same, later = 0, 0
    for m in dups:
        folder = noisy / Path(m["file"]).parent
        for path in sorted(folder.glob("*.jsonl")):
            lines = path.read_text(encoding="utf-8").split("\n")
            hits = [i for i, s in enumerate(lines, 1) if m["id"] in s]
            if hits and (path.relative_to(noisy).as_posix(), hits[0]) != (m["file"], m["line"]):
                if path.relative_to(noisy).as_posix() == m["file"]:
                    same += 1
                else:
                    later += 1
                break
    assert same > 0 and later > 0


# ----------------------------------------------------------------------------------------- valid records


def _valid_records(root: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    truth = {(m["file"], m["line"]) for m in _truth(root, "malformed.jsonl")}
    return {
        feed: [(folder, json.loads(text)) for folder, rel, i, text in rows if (rel, i) not in truth]
        for feed, rows in _read_landing(root).items()
    }


def test_valid_records_follow_the_contract(small: tuple[Path, dict[str, Any]]) -> None:
    root, _ = small
    valid = _valid_records(root)
    catalogue: dict[str, dict[str, Any]] = {}
    first_day: dict[str, str] = {}
    for folder, p in valid["places"]:
        assert p["source"] == "demo" and p["category"] in V.CATEGORIES and p["district"] in V.DISTRICTS
        assert 37.3 < p["lat"] < 37.8 and 126.7 < p["lon"] < 127.3
        assert HANGUL.search(p["name"]) and p["address"].startswith("서울 ")
        assert p["updated_ts"].endswith("+09:00")
        catalogue[p["place_id"]] = p
        first_day.setdefault(p["place_id"], folder)
    day1 = [p for f, p in valid["places"] if f == "dt=2026-03-06"]
    day2 = [p for f, p in valid["places"] if f == "dt=2026-03-07"]
    assert len(day1) == SMALL["places"] and 1 <= len(day2) < len(day1)
    assert any(p["place_id"] not in {q["place_id"] for q in day1} for p in day2)  # a new place
    assert any(p["place_id"] in {q["place_id"] for q in day1} for p in day2)  # a changed place

    review_events = {}
    users = {u["user_id"] for u in _truth(root, "users.jsonl")}
    for folder, e in valid["events"]:
        assert e["source"] == "demo" and e["ts"].endswith("+09:00") and e["device"] in ("ios", "android", "web")
        assert e["user_id"] in users and e["session_id"]
        if e["event_type"] == "search":
            assert e["place_id"] is None and HANGUL.search(e["query"]) and len(e["query"]) <= 50
        else:
            assert e["query"] is None and first_day[e["place_id"]] <= folder
        if e["event_type"] == "impression":
            assert 1 <= e["position"] <= 20
        if e["event_type"] == "review":
            review_events[e["review_id"]] = e
        else:
            assert e["review_id"] is None and e["rating"] is None
    reviews = valid["reviews"]
    assert reviews
    for _folder, r in reviews:
        e = review_events.pop(r["review_id"])
        assert (e["user_id"], e["place_id"], e["rating"], e["ts"]) == (
            r["user_id"],
            r["place_id"],
            r["rating"],
            r["ts"],
        )
        assert 1 <= r["rating"] <= 5 and 0 < len(r["text"]) <= 2000 and HANGUL.search(r["text"])
        assert r["source"] == "demo"
    assert review_events == {}  # every review event has its review


def test_reviews_are_written_from_their_aspects(small: tuple[Path, dict[str, Any]]) -> None:
    root, _ = small
    texts = {r["review_id"]: r for _, r in _valid_records(root)["reviews"]}
    truth = _truth(root, "review_aspects.jsonl")
    assert {t["review_id"] for t in truth} == set(texts)
    for t in truth:
        review = texts[t["review_id"]]
        assert 1 <= len(t["aspects"]) <= 3 and len(review["text"].split(". ")) <= 6
        for a in t["aspects"]:
            assert a["aspect"] in V.ASPECTS and a["sentence"] in review["text"]
        signs = {a["sentiment"] for a in t["aspects"]}
        if signs == {"positive"}:
            assert review["rating"] >= 4
        elif signs == {"negative"}:
            assert review["rating"] <= 2
        else:
            assert 2 <= review["rating"] <= 4


def test_template_bank_is_rich() -> None:
    assert len(V.ASPECTS) >= 8
    for aspect in V.ASPECTS:
        for sentiment in ("positive", "negative"):
            assert len(set(V.TEMPLATES[aspect][sentiment])) >= 3


def test_tastes_drive_clicks(small: tuple[Path, dict[str, Any]]) -> None:
    """Impressions of a user's favourite category are clicked clearly more often than the rest."""
    root, _ = small
    valid = _valid_records(root)
    users = {u["user_id"]: u for u in _truth(root, "users.jsonl")}
    category: dict[str, str] = {}
    for _, p in valid["places"]:
        category.setdefault(p["place_id"], p["category"])  # day-1 category (a few change later)
    shown: Counter[str] = Counter()
    clicked: Counter[str] = Counter()
    for _, e in valid["events"]:
        if e["event_type"] not in ("impression", "click"):
            continue
        weights = users[e["user_id"]]["category_weights"]
        kind = "top" if category[e["place_id"]] == max(weights, key=weights.get) else "other"
        (shown if e["event_type"] == "impression" else clicked)[kind] += 1
    ctr_top, ctr_other = clicked["top"] / shown["top"], clicked["other"] / shown["other"]
    assert shown["top"] >= 100 and ctr_top > 1.8 * ctr_other, (shown, clicked)


def test_popularity_is_skewed(small: tuple[Path, dict[str, Any]]) -> None:
    root, _ = small
    views = Counter(e["place_id"] for _, e in _valid_records(root)["events"] if e["event_type"] == "view")
    counts = sorted(views.values(), reverse=True)
    top_tenth = sum(counts[: max(1, len(counts) // 10)])
    assert top_tenth > 0.25 * sum(counts)


# ---------------------------------------------------------------------------------------------------- NSMC


@pytest.fixture(scope="module")
def nsmc_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = NSMC_DIR / "reviews.tsv.gz"
    if not source.is_file():
        pytest.skip(f"NSMC data not found at {source}")
    sample = tmp_path_factory.mktemp("nsmc") / "sample.tsv.gz"
    with gzip.open(source, "rt", encoding="utf-8") as src, gzip.open(sample, "wt", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i > 2000:
                break
            dst.write(line)
    return sample


def test_nsmc_mapping(nsmc_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "landing-nsmc"
    result = import_nsmc_landing(nsmc_sample, out, NSMC_DIR / "synopses.json")
    assert result["rows"] == result["reviews"] == result["events"] == 2000
    with gzip.open(nsmc_sample, "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    assert result["places"] == len({r[2] for r in rows})
    assert result["empty_text"] == sum(1 for r in rows if not r[5].strip())

    landing = _read_landing(out)
    months = {folder for feed in landing.values() for folder, *_ in feed}
    assert months == {f"dt={r[4][:8]}01" for r in rows}
    events = {json.loads(t)["review_id"]: json.loads(t) for _, _, _, t in landing["events"]}
    place_month = {}
    for folder, _, _, text in landing["places"]:
        p = json.loads(text)
        assert p["category"] == "영화" and p["source"] == "nsmc" and p["lat"] is None and p["district"] is None
        assert p["place_id"] not in place_month
        place_month[p["place_id"]] = folder
    by_id = {f"nsmc-r{r[0]}": r for r in rows}
    for folder, _, _, text in landing["reviews"]:
        r = json.loads(text)
        src = by_id[r["review_id"]]
        assert r["user_id"] == f"nsmc-u{src[1]}" and r["place_id"] == f"nsmc-m{src[2]}"
        assert r["rating"] == int(src[3]) and r["text"] == src[5] and r["source"] == "nsmc"
        assert r["ts"] == f"{src[4]}T12:00:00+09:00" and folder == f"dt={src[4][:8]}01"
        assert place_month[r["place_id"]] <= folder
        e = events[r["review_id"]]
        assert e["event_id"] == "nsmc-e" + src[0] and e["event_type"] == "review"
        assert (e["user_id"], e["place_id"], e["rating"], e["ts"]) == (
            r["user_id"],
            r["place_id"],
            r["rating"],
            r["ts"],
        )
        start, _ = _interval(folder)
        assert start <= datetime.fromisoformat(r["ts"])
        if r["text"].strip():
            assert problems_of("reviews", text, start, start + timedelta(days=31), rating_max=10) == []

    again = tmp_path / "again"
    import_nsmc_landing(nsmc_sample, again, NSMC_DIR / "synopses.json")
    assert _tree_bytes(again) == _tree_bytes(out)
    limited = import_nsmc_landing(nsmc_sample, tmp_path / "limited", limit=100)
    assert limited["rows"] == 100


def test_nsmc_titles(tmp_path: Path) -> None:
    path = tmp_path / "synopses.json"
    path.write_text(json.dumps([{"movie_id": 10002, "title_kr": "백 투 더 퓨쳐"}, {"title_kr": "레옹"}]))
    assert load_titles(path) == {"10002": "백 투 더 퓨쳐"}
    path.write_text(json.dumps({"10048": "레옹", "1": {"title_kr": "매트릭스"}}), encoding="utf-8")
    assert load_titles(path) == {"10048": "레옹", "1": "매트릭스"}
    assert load_titles(None) == {}


def test_the_demo_prints_each_step_and_ends_with_the_page(tmp_path: Path) -> None:
    from placerec.demo.run import DemoResult, format_demo
    from placerec.report import DayCounts, EnrichSummary

    result = DemoResult(
        first=date(2026, 11, 1),
        last=date(2026, 11, 2),
        seed=7,
        landing=tmp_path,
        backfill_id=3,
        ingestion=[DayCounts(date(2026, 11, 1), events=10, rows_read=12), DayCounts(date(2026, 11, 2), events=9)],
        enrich_run_id="manual__x",
        enrichment=EnrichSummary(days_covered={date(2026, 11, 1)}, reviews=4),
        training={"model_version": None, "test": ["2026-11-02", "2026-11-03"], "gate": "not enough test users"},
        publish=None,
        sample_user="",
        sample_answer=None,
        seconds=61.4,
        airflow_url="http://127.0.0.1:8080",
        page_url="http://127.0.0.1:8080/placerec/",
    )
    text = format_demo(result)
    assert "train_hybrid for 2026-11-03: not enough test users" in text
    assert "publish_index: not triggered, the gate did not promote this model" in text
    assert "placerec recommend" not in text  # nothing was published, so no sample answer
    assert text.endswith("placerec page (charts of these runs): http://127.0.0.1:8080/placerec/")
    unchanged = {"version": "v9", "model_version": "m", "status": "unchanged", "reason": "same"}
    published = replace(result, publish=unchanged)
    assert "publish v9 (model m): unchanged (same)" in format_demo(published)
