"""publish_index against the real OpenSearch node: swaps under readers, failures, rejection, rollback, auth.

Inputs are written to a private Iceberg catalog (the unit tests' home) as the train and enrich jobs
would leave them: a promoted model's lists, place profiles with vectors, search interests. Every test
publishes under its own index prefix, so the demo's aliases are never touched; faults come from
``tests/opensearch_proxy.py``, a local test server forwarding to the real node.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from placerec.dev import opensearch
from placerec.ingest.commit import mark_committed
from placerec.serve import indices, publish, query
from placerec.serve.client import opensearch_client
from placerec.settings import Settings, get_settings

from ..opensearch_proxy import OpenSearchProxy

pytestmark = pytest.mark.integration

DAY = date(2031, 1, 1)  # far from every other test's data in the shared unit catalog
START, END = datetime(2030, 12, 31, tzinfo=timezone.utc), datetime(2031, 1, 1, tzinfo=timezone.utc)
MODEL = "hybrid-pubtest-1"
N_PLACES, N_USERS, N_COLD, DIM, LIST = 240, 60, 25, 32, 10
CATEGORIES, DISTRICTS = ("카페", "한식", "술집"), ("성수동", "연남동", "여의도")
WORDS = ("조용한", "분위기", "커피", "디저트", "삼겹살", "데이트", "가성비", "친절", "야경", "와인")


@pytest.fixture(autouse=True)
def service_home(unit_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Here the catalog is the private one of the session's Spark (the node is the real, shared one)."""
    monkeypatch.setenv("PLACEREC_HOME", str(unit_home))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _rows(spark: Any, table: str, rows: list[dict[str, Any]]) -> None:
    schema = spark.table(table).schema
    full = [tuple(r.get(f.name) for f in schema.fields) for r in rows]
    spark.createDataFrame(full, schema).writeTo(table).append()


@pytest.fixture(scope="module")
def inputs(spark: Any) -> dict[str, Any]:
    """Places (clustered vectors), a promoted model's top-10 lists, cold users with interest vectors."""
    from placerec.catalog import get_catalog
    from placerec.tables import ensure_tables

    ensure_tables(get_catalog())
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(6, DIM))
    vectors = centres[rng.integers(0, 6, N_PLACES)] + 0.4 * rng.normal(size=(N_PLACES, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ts = datetime(2030, 12, 1, tzinfo=timezone.utc)
    places = [f"pt{i:04d}" for i in range(N_PLACES)]
    meta = {p: (CATEGORIES[i % 3], DISTRICTS[(i // 3) % 3]) for i, p in enumerate(places)}
    keywords = {p: [WORDS[(i + j) % len(WORDS)] for j in range(3)] for i, p in enumerate(places)}
    _rows(
        spark,
        "raw.places",
        [
            {
                "place_id": p,
                "name": f"{meta[p][1]} {meta[p][0]} {i}",
                "category": meta[p][0],
                "district": meta[p][1],
                "lat": 37.5 + i / 1e4,
                "lon": 127.0 + i / 1e4,
                "address": f"서울 {meta[p][1]} {i}",
                "updated_ts": ts,
                "source": "test",
            }
            for i, p in enumerate(places)
        ],
    )
    _rows(
        spark,
        "features.place_profiles",
        [
            {
                "place_id": p,
                "top_keywords": keywords[p],
                "positive_keywords": keywords[p],
                "embedding": vectors[i].tolist(),
                "built_for": DAY,
            }
            for i, p in enumerate(places)
        ],
    )
    _rows(
        spark,
        "features.interactions",
        [
            {"user_id": "u0", "place_id": p, "weight": float(N_PLACES - i), "built_for": DAY}
            for i, p in enumerate(places)
        ],
    )
    warm = [f"pu{i:03d}" for i in range(N_USERS)]
    recs = []
    for user in warm:
        picks = rng.choice(N_PLACES, LIST, replace=False)
        for rank, i in enumerate(picks, start=1):
            recs.append(
                {
                    "model_version": MODEL,
                    "user_id": user,
                    "rank": rank,
                    "place_id": places[i],
                    "score": float(LIST - rank),
                    "reason": keywords[places[i]][:2],
                }
            )
    _rows(spark, "model.recommendations", recs)
    cold = [f"pc{i:03d}" for i in range(N_COLD)]
    _rows(
        spark,
        "features.user_interests",
        [
            {
                "user_id": user,
                "origin": "search",
                "keywords": ["조용한", "커피"],
                "embedding": vectors[i].tolist(),
                "built_for": DAY,
            }
            for i, user in enumerate(cold)
        ],
    )
    _rows(
        spark,
        "model.runs",
        [
            {
                "model_version": MODEL,
                "trained_for": DAY,
                "params": {},
                "input_snapshots": {},
                "metrics": {},
                "promoted": True,
                "forced": False,
                "created_at": datetime.now(timezone.utc),
            }
        ],
    )
    # raw.* is read as of the last ingest commit: these fixture rows are committed as they are
    mark_committed(spark, START, END, "pubtest-fixture")
    # other tests of the session may have put places of their own in the shared catalogue
    n_places = spark.table("raw.places").select("place_id").distinct().count()
    return {"warm": warm, "cold": cold, "recs": recs, "vectors": vectors, "places": places, "meta": meta, "n": n_places}


@pytest.fixture
def settings() -> Iterator[Settings]:
    """Settings with a prefix of this test's own; every index under it is deleted afterwards."""
    base = get_settings()
    healthy, detail = opensearch.probe(base)
    if not healthy:
        pytest.fail(f"OpenSearch at {base.opensearch_url} is not usable ({detail}); run `placerec dev up`")
    s = dataclasses.replace(base, index_prefix=f"pubtest-{uuid.uuid4().hex[:8]}", index_keep_versions=2)
    yield s
    client = opensearch_client(base)
    client.indices.delete(index=f"{s.index_prefix}-*", ignore_unavailable=True)
    client.close()


def run(spark: Any, s: Settings, **kwargs: Any) -> dict[str, Any]:
    return publish.run_publish_index(spark, START, END, model_version=MODEL, settings=s, **kwargs)


def versions(s: Settings) -> dict[str, str]:
    """version → status in ops.index_versions (the places row speaks for the set)."""
    return {r["version"]: r["status"] for r in publish.recorded(s) if r["family"] == "places" and r["version"]}


def index_names(s: Settings) -> set[str]:
    client = opensearch_client(s)
    rows = client.cat.indices(index=f"{s.index_prefix}-*", format="json", h="index")
    return {r["index"] for r in rows}


def test_publish_loads_validates_and_serves(spark: Any, inputs: dict[str, Any], settings: Settings) -> None:
    details = run(spark, settings)
    assert details["status"] == "live"
    client = opensearch_client(settings)
    assert publish.live_version(client, settings) == details["version"]
    expected = {"places": inputs["n"], "recommendations": N_USERS, "users": N_COLD}
    for family, n in expected.items():
        assert client.count(index=indices.alias_name(settings, family))["count"] == n
    assert details["validation"]["recall@10"] >= 0.95
    rows = [r for r in publish.recorded(settings) if r["version"] == details["version"]]
    assert {r["family"]: r["docs"] for r in rows} == expected
    assert all(r["status"] == "live" and r["model_version"] == MODEL for r in rows)
    assert all(r["source_snapshots"] for r in rows)

    # a warm user: the model's list, in rank order, with the reasons it was stored with
    user = inputs["warm"][0]
    mine = sorted((r for r in inputs["recs"] if r["user_id"] == user), key=lambda r: r["rank"])
    answer = query.recommend(client, settings, user, k=LIST)
    assert answer.source == "precomputed" and answer.model_version == MODEL
    assert [h.place_id for h in answer.hits] == [r["place_id"] for r in mine]
    assert [h.reasons for h in answer.hits] == [r["reason"] for r in mine]
    narrowed = query.recommend(client, settings, user, k=LIST, category="카페")
    assert [h.place_id for h in narrowed.hits] == [
        r["place_id"] for r in mine if inputs["meta"][r["place_id"]][0] == "카페"
    ]

    # a cold user: k-NN from the interest vector, filters applied inside the search
    cold = inputs["cold"][3]
    answer = query.recommend(client, settings, cold, k=5, district="연남동")
    assert answer.source == "interests" and len(answer.hits) == 5
    assert {h.district for h in answer.hits} == {"연남동"}
    exact = publish.exact_top(inputs["vectors"][3:4], inputs["vectors"], N_PLACES)[0]
    in_district = [inputs["places"][j] for j in exact if inputs["meta"][inputs["places"][j]][1] == "연남동"][:5]
    assert [h.place_id for h in answer.hits] == in_district

    # nobody: the most popular places (interactions weight falls with the index)
    answer = query.recommend(client, settings, "nobody", k=3)
    assert answer.source == "popular" and [h.place_id for h in answer.hits] == inputs["places"][:3]

    # search: keyword hits carry the matched keywords as reasons
    answer = query.search(client, settings, "와인", None, k=5)
    assert answer.hits and all("와인" in h.reasons for h in answer.hits)


def test_swaps_never_show_readers_an_error_or_an_empty_index(
    spark: Any, inputs: dict[str, Any], settings: Settings
) -> None:
    first = run(spark, settings)
    client = opensearch_client(settings)
    stop = threading.Event()
    seen: dict[str, int] = {"reads": 0, "empty": 0, "errors": 0}
    problems: list[str] = []

    def reader() -> None:
        reader_client = opensearch_client(settings)
        while not stop.is_set():
            try:
                hits = reader_client.search(
                    index=indices.alias_name(settings, "places"), body={"size": 1, "query": {"match_all": {}}}
                )["hits"]["total"]["value"]
                answer = query.recommend(reader_client, settings, inputs["warm"][1], k=5)
                seen["reads"] += 1
                if hits != inputs["n"] or answer.source != "precomputed" or len(answer.hits) != 5:
                    seen["empty"] += 1
                    problems.append(f"{hits} places, {answer.source} with {len(answer.hits)}")
            except Exception as exc:
                seen["errors"] += 1
                problems.append(repr(exc))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        second = run(spark, settings, force=True)
        third = run(spark, settings, force=True)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert seen["reads"] > 20, seen
    assert seen["errors"] == 0 and seen["empty"] == 0, problems[:5]
    assert publish.live_version(client, settings) == third["version"]
    # keep 2 versions: the first one is gone from the cluster and recorded as deleted
    assert third["deleted"] == [first["version"]]
    assert versions(settings) == {first["version"]: "deleted", second["version"]: "previous", third["version"]: "live"}
    assert {publish.version_of(i, "places", settings) for i in index_names(settings) if "-places-" in i} == {
        second["version"],
        third["version"],
    }


def test_rollback_and_roll_forward(spark: Any, inputs: dict[str, Any], settings: Settings) -> None:
    first = run(spark, settings)
    second = run(spark, settings, force=True)
    client = opensearch_client(settings)
    assert publish.rollback(settings=settings) == {
        "from": second["version"],
        "to": first["version"],
        "status": "rolled back",
    }
    assert publish.live_version(client, settings) == first["version"]
    assert versions(settings) == {first["version"]: "live", second["version"]: "rolled-back"}
    assert query.recommend(client, settings, inputs["warm"][0]).source == "precomputed"
    with pytest.raises(publish.PublishError, match="no version older"):
        publish.rollback(settings=settings)
    publish.rollback(to=second["version"], settings=settings)
    assert publish.live_version(client, settings) == second["version"]
    with pytest.raises(publish.PublishError, match="no complete set"):
        publish.rollback(to="v1-nope", settings=settings)


def test_failed_build_leaves_the_alias_and_removes_the_half_built_index(
    spark: Any, inputs: dict[str, Any], settings: Settings
) -> None:
    first = run(spark, settings)
    with OpenSearchProxy(settings.opensearch_url) as proxy:
        proxy.fail_bulk_after_docs = 100
        faulty = dataclasses.replace(settings, opensearch_url=proxy.url, publish_max_retries=1)
        with pytest.raises(publish.PublishError, match="bulk load failed"):
            run(spark, faulty, force=True)
        assert proxy.bulk_docs >= 100
        assert not any(r.startswith("POST /_aliases") for r in proxy.requests)
    client = opensearch_client(settings)
    assert publish.live_version(client, settings) == first["version"]
    assert index_names(settings) == {indices.index_name(settings, f, first["version"]) for f in indices.FAMILIES}
    statuses = versions(settings)
    failed = [v for v, st in statuses.items() if v != first["version"]]
    assert len(failed) == 1 and statuses[failed[0]] == "failed"
    assert client.count(index=indices.alias_name(settings, "places"))["count"] == inputs["n"]


def test_validation_rejects_a_corrupted_vector_set(spark: Any, inputs: dict[str, Any], settings: Settings) -> None:
    first = run(spark, settings)
    with OpenSearchProxy(settings.opensearch_url) as proxy:
        proxy.corrupt_vectors = "embedding"
        corrupt = dataclasses.replace(settings, opensearch_url=proxy.url)
        with pytest.raises(publish.PublishError, match=r"validation failed: .*k-NN recall@10 0\.\d+ < 0\.95"):
            run(spark, corrupt, force=True)
    client = opensearch_client(settings)
    assert publish.live_version(client, settings) == first["version"]
    assert index_names(settings) == {indices.index_name(settings, f, first["version"]) for f in indices.FAMILIES}
    rejected = [r for r in publish.recorded(settings) if r["status"] == "rejected"]
    assert rejected and json.loads(rejected[0]["details"])["validation"]["recall@10"] < 0.95


def test_dry_run_validates_and_drops_the_build(spark: Any, inputs: dict[str, Any], settings: Settings) -> None:
    details = run(spark, settings, dry_run=True)
    assert details["status"] == "dry-run" and details["validation"]["problems"] == []
    assert publish.live_version(opensearch_client(settings), settings) is None
    assert index_names(settings) == set()


def test_rejected_bulk_requests_are_retried_with_back_off(
    spark: Any, inputs: dict[str, Any], settings: Settings
) -> None:
    with OpenSearchProxy(settings.opensearch_url) as proxy:
        proxy.throttle_bulk = 3
        throttled = dataclasses.replace(settings, opensearch_url=proxy.url, publish_chunk_docs=50)
        details = run(spark, throttled)
        assert proxy.throttled == 3
    assert details["status"] == "live"
    assert details["validation"]["counts"] == {"places": inputs["n"], "recommendations": N_USERS, "users": N_COLD}


@pytest.mark.reliability
def test_tls_and_basic_auth_without_leaking_the_password(
    spark: Any,
    inputs: dict[str, Any],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    capfd: Any,
    record_property: Any,
) -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    with OpenSearchProxy(settings.opensearch_url, tls=True, basic_auth=("placerec", secret)) as proxy:
        secure = dataclasses.replace(
            settings,
            opensearch_url=proxy.url,
            opensearch_user="placerec",
            opensearch_password=secret,
            opensearch_ca_certs=str(proxy.ca_cert),
        )
        with caplog.at_level(logging.DEBUG):
            details = run(spark, secure)
        assert details["status"] == "live" and proxy.auth_failures == 0
        answer = query.recommend(opensearch_client(secure), secure, inputs["warm"][0])
        assert answer.source == "precomputed"
        wrong = dataclasses.replace(secure, opensearch_password="wrong-" + secret)
        with pytest.raises(Exception) as refused:
            publish.rollback(settings=wrong)
        assert proxy.auth_failures >= 1
    assert secret not in repr(secure)
    assert secret not in str(refused.value)
    assert secret not in caplog.text
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err
    assert secret not in json.dumps(details, default=str)
    rows = publish.recorded(settings)
    assert rows and secret not in json.dumps(rows, default=str)
    from placerec.catalog import get_catalog

    metrics = get_catalog().load_table("ops.task_metrics").scan(row_filter="job = 'publish_index'").to_arrow()
    assert secret not in json.dumps(metrics.to_pylist(), default=str)
    # and nowhere else: no table's rows or metadata, no file of either state folder, no Spark process
    from ..conftest import SERVICE_HOME
    from ..secret_sweep import in_files, in_processes, in_tables, service_pids

    home = get_settings().home
    found = in_tables([secret], get_catalog())
    found += in_files([secret], [home, SERVICE_HOME / "logs", SERVICE_HOME / "spark"])
    found += in_processes([secret], service_pids(SERVICE_HOME, "spark"))
    record_property("secrets_searched", 1)
    record_property("secrets_found", len(found))
    assert found == []


def test_an_interrupted_build_is_never_served_and_a_rerun_cleans_it_up(
    spark: Any, inputs: dict[str, Any], settings: Settings
) -> None:
    first = run(spark, settings)
    client = opensearch_client(settings)
    orphan = "v20000101000000-deadbeef"  # as a killed job would leave it: all three indices, never validated
    for family in indices.FAMILIES:
        client.indices.create(index=indices.index_name(settings, family, orphan))
    with pytest.raises(publish.PublishError, match="no version older"):
        publish.rollback(settings=settings)
    with pytest.raises(publish.PublishError, match="no complete set"):
        publish.rollback(to=orphan, settings=settings)
    again = run(spark, settings)
    assert again["status"] == "unchanged" and again["orphans_deleted"] == [orphan]
    assert index_names(settings) == {indices.index_name(settings, f, first["version"]) for f in indices.FAMILIES}
    assert versions(settings)[orphan] == "failed"


class SecondNode:
    """A second real OpenSearch node, so this test may stop one without disturbing the shared one: its own
    state folder (under the services' home, which the node's user can reach) and port, the distribution
    `dev up` installed, started and stopped by the real `placerec dev up/down --only opensearch`."""

    def __init__(self) -> None:
        import socket

        from ..conftest import SERVICE_HOME

        self.home = SERVICE_HOME / f"test-node-{uuid.uuid4().hex[:8]}"
        (self.home / "opensearch").mkdir(parents=True)
        (self.home / "cache").symlink_to(SERVICE_HOME / "cache", target_is_directory=True)
        (self.home / "opensearch" / "dist").symlink_to(SERVICE_HOME / "opensearch" / "dist", target_is_directory=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def cli(self, *args: str) -> None:
        import os
        import subprocess
        import sys

        env = {**os.environ, "PLACEREC_HOME": str(self.home), "PLACEREC_OPENSEARCH_URL": self.url}
        env["PLACEREC_OPENSEARCH_HEAP"] = "512m"
        placerec = str(Path(sys.executable).with_name("placerec"))
        subprocess.run([placerec, "dev", *args, "--only", "opensearch"], env=env, check=True, timeout=300)

    def kill(self) -> None:
        """SIGKILL the node's whole process group: stopped at once, mid-request."""
        import os
        import signal

        from placerec.dev.process import read_pid_file

        rec = read_pid_file(self.home / "run" / "opensearch.pid")
        assert rec is not None
        os.killpg(os.getpgid(rec.pid), signal.SIGKILL)

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.home, ignore_errors=True)


@pytest.mark.reliability
def test_a_node_stopped_mid_publish_leaves_the_alias_and_the_retry_succeeds(
    spark: Any, inputs: dict[str, Any], settings: Settings, record_property: Any
) -> None:
    import time
    import urllib.request

    node = SecondNode()
    try:
        node.cli("up")
        s = dataclasses.replace(settings, opensearch_url=node.url, publish_max_retries=1, opensearch_timeout_s=10.0)
        first = run(spark, s)
        stopped = threading.Event()

        def stop_when_the_build_starts() -> None:  # the first index of the next version appears: kill the node
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                url = f"{node.url}/_cat/indices/{s.index_prefix}-*?format=json&h=index"
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if len(json.loads(answer.read())) > len(indices.FAMILIES):
                        node.kill()
                        stopped.set()
                        return
                time.sleep(0.02)

        watcher = threading.Thread(target=stop_when_the_build_starts, daemon=True)
        watcher.start()
        with pytest.raises(publish.PublishError, match="unreachable"):
            run(spark, s, force=True)
        watcher.join(timeout=30)
        assert stopped.is_set(), "the node was never stopped"
        node.cli("up")  # back: the alias is where it was, the half-built version is not served
        assert publish.live_version(opensearch_client(s), s) == first["version"]
        statuses = versions(s)
        half_built = [v for v, st in statuses.items() if v != first["version"]]
        assert len(half_built) == 1 and statuses[half_built[0]] == "failed", statuses
        again = run(spark, s, force=True)  # the retry
        assert again["status"] == "live" and publish.live_version(opensearch_client(s), s) == again["version"]
        assert opensearch_client(s).count(index=indices.alias_name(s, "places"))["count"] == inputs["n"]
        record_property("faults_injected", 1)
        record_property("faults_survived", 1)
    finally:
        try:
            node.cli("down")
        finally:
            node.remove()
