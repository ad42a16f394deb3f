"""Enrichment through the real Airflow: ingest runs trigger enrich_reviews through their Assets.

One day of demo data (own landing root, days no other test or the demo uses) are ingested by a
backfill; enrich_reviews then runs with the offline extractor (Kiwi + the real e5 endpoint), builds
place profiles and search interests. A manual rerun of the same interval makes no endpoint call.
Then the chain runs with secrets as Airflow keeps them (connections): an LLM enrich run with a key, and
a publish (dry run) of those features through TLS with a password; neither secret is found anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from placerec.airflow_api import AirflowApi, AirflowError
from placerec.catalog import get_catalog
from placerec.demo import generate
from placerec.enrich.embeddings import EmbeddingClient
from placerec.settings import Settings, get_settings

from ..conftest import SERVICE_HOME, after_demo

pytestmark = pytest.mark.integration

FIRST, DAYS = after_demo(4), 1
LAST = FIRST + timedelta(days=DAYS - 1)
LO = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=timezone.utc)
HI = LO + timedelta(days=DAYS)
JOB = "extract_review_keywords"


@pytest.fixture(scope="module")
def settings() -> Settings:
    # the environment's ports and URLs (a CI run may move them), the services' state folder
    return dataclasses.replace(get_settings(), home=SERVICE_HOME)


@pytest.fixture(scope="module")
def enriched(settings: Settings) -> Iterator[dict[str, Any]]:
    """Ingest a day by backfill and wait for the asset-triggered enrich run to cover it."""
    api = AirflowApi(settings)
    api.wait_for_dag("ingest_events")
    api.wait_for_dag("enrich_reviews")
    api.wait_for_dag("train_hybrid")
    # Training on a day of test data is not this test's business (and would fail: no history).
    api.set_paused("train_hybrid", True)
    root = SERVICE_HOME / "test-landing" / "enrich-airflow"
    generate(root, FIRST, DAYS, seed=11, places=80, users=250, events=4000, malformed_rate=0.0)
    began = datetime.now(timezone.utc)
    api.set_paused("enrich_reviews", False)
    api.set_paused("ingest_events", False)
    for stale in api.active_backfills("ingest_events"):
        api.wait_backfill(stale["id"], "ingest_events", FIRST, LAST, timeout=1800)
    backfill = api.create_backfill("ingest_events", FIRST, LAST, reprocess="completed", conf={"landing": str(root)})
    api.wait_backfill(backfill, "ingest_events", FIRST, LAST, timeout=1800)
    try:
        runs = api.wait_asset_triggered(
            "enrich_reviews", began, lambda: covered(settings, began) >= {FIRST, LAST}, timeout=1800
        )
        yield {"api": api, "runs": runs, "began": began}
    finally:
        # Other tests' ingest runs must not start enrich runs behind their back.
        api.set_paused("enrich_reviews", True)


def metrics(settings: Settings) -> list[dict[str, Any]]:
    table = get_catalog(settings).load_table("ops.task_metrics")
    return table.scan(row_filter=f"job = '{JOB}'").to_arrow().to_pylist()


def covered(settings: Settings, since: datetime) -> set[date]:
    """Days enriched by runs recorded after ``since`` (a catalog reused across runs holds older rows)."""
    days = set()
    for row in metrics(settings):
        if row["recorded_at"] < since:
            continue
        start, end = row["interval_start"], row["interval_end"]
        d = FIRST
        while d <= LAST:
            if start <= datetime(d.year, d.month, d.day, tzinfo=timezone.utc) < end:
                days.add(d)
            d += timedelta(days=1)
    return days


def scan(settings: Settings, table: str, row_filter: str = "true", fields: tuple[str, ...] = ("*",)) -> list[dict]:  # type: ignore[type-arg]
    return (
        get_catalog(settings)
        .load_table(table)
        .scan(row_filter=row_filter, selected_fields=fields)
        .to_arrow()
        .to_pylist()
    )


def test_asset_triggered_runs_enrich_every_review(enriched: dict[str, Any], settings: Settings) -> None:
    runs = enriched["runs"]
    assert runs and {r["run_type"] for r in runs} <= {"asset_triggered"}
    window = f"review_ts >= '{LO.isoformat()}' and review_ts < '{HI.isoformat()}'"
    reviews = {r["review_id"]: r["text"] for r in scan(settings, "raw.reviews", window, ("review_id", "text"))}
    assert len(reviews) > 20
    rows = scan(settings, "features.review_keywords", window)
    quarantined = {
        json.loads(r["record"])["review_id"]
        for r in scan(settings, "raw.quarantine", f"job = '{JOB}' and interval_start >= '{LO.isoformat()}'")
        if LO <= r["interval_start"] < HI
    }
    with_keywords = {r["review_id"] for r in rows}
    assert with_keywords | quarantined == set(reviews)
    assert not with_keywords & quarantined
    assert len(with_keywords) >= 0.9 * len(reviews), "the local extractor finds keywords in demo reviews"
    for r in rows:
        assert r["evidence"] in reviews[r["review_id"]]
        assert r["extractor"] == "local" and r["prompt_version"] and r["model"]


def built_for(settings: Settings) -> date:
    """The as-of day of the newest enrich run covering the test day: an asset-triggered run may also
    have consumed the events of a scheduled ingest run for another day (its interval spans both)."""
    row = max(
        (r for r in metrics(settings) if r["interval_start"] <= LO < r["interval_end"]),
        key=lambda r: r["recorded_at"],
    )
    return (row["interval_end"] - timedelta(microseconds=1)).date()


def test_profiles_and_interests_carry_real_e5_vectors(enriched: dict[str, Any], settings: Settings) -> None:
    day = built_for(settings)
    profiles = scan(settings, "features.place_profiles", f"built_for = '{day.isoformat()}'")
    places = scan(settings, "raw.places", fields=("place_id",))
    assert {p["place_id"] for p in profiles} == {p["place_id"] for p in places}
    assert all(len(p["embedding"]) == 384 for p in profiles)
    sample = sorted((p for p in profiles if p["top_keywords"]), key=lambda p: p["place_id"])[:5]
    assert sample, "no place has review keywords"
    with EmbeddingClient(settings=settings) as client:
        direct = client.embed([p["profile_text"] for p in sample], "passage")
    for p, v in zip(sample, direct, strict=True):
        dot = sum(a * b for a, b in zip(p["embedding"], v, strict=True))
        norm = math.sqrt(sum(a * a for a in p["embedding"])) * math.sqrt(sum(b * b for b in v))
        assert dot / norm > 0.999, p["place_id"]
        assert any(k in p["profile_text"] for k in p["top_keywords"])
    interests = scan(settings, "features.user_interests", f"origin = 'search' and built_for = '{day.isoformat()}'")
    assert interests and all(len(u["embedding"]) == 384 for u in interests)
    assert sum(bool(u["keywords"]) for u in interests) >= 0.8 * len(interests)


def test_manual_rerun_of_the_interval_makes_no_call(enriched: dict[str, Any], settings: Settings) -> None:
    api: AirflowApi = enriched["api"]
    run_id = api.trigger("enrich_reviews", {"start": LO.date().isoformat(), "end": HI.date().isoformat()})
    assert api.wait_run("enrich_reviews", run_id) == "success"
    row = next(r for r in metrics(settings) if r["interval_start"] == LO and r["interval_end"] == HI)
    assert row["run_id"] == run_id
    assert row["calls"] == 0 and row["cache_hits"] > 0 and row["tokens"] == 0
    assert json.loads(row["details"])["sent"] == 0


def test_a_trigger_with_the_form_as_opened_takes_the_latest_complete_interval(enriched: dict[str, Any]) -> None:
    """No start/end: the newest interval ingest_events completed (its ops.task_metrics rows), as a dry run."""
    from placerec.orchestration import latest_complete_interval

    api: AirflowApi = enriched["api"]
    start, end = latest_complete_interval("ingest_events")
    run_id = api.trigger("enrich_reviews", {"dry_run": True})
    assert api.wait_run("enrich_reviews", run_id) == "success"
    run = f"/dags/enrich_reviews/dagRuns/{run_id}/taskInstances/resolve_interval/xcomEntries/return_value"
    assert api.get(run)["value"] == {"start": start.isoformat(), "end": end.isoformat()}
    task = api.get(f"/dags/enrich_reviews/dagRuns/{run_id}/taskInstances/extract_review_keywords")
    args = task["rendered_fields"]["args"]  # what the Spark task ran on (a dry run records no metrics)
    assert args[args.index("--start") + 1] == start.isoformat() and args[args.index("--end") + 1] == end.isoformat()


@pytest.mark.parametrize(
    ("conf", "says"),
    [({"start": "2026-13-01"}, "is not a 'date'"), ({"budget_tokens": -1}, "less than the minimum of 1")],
)
def test_a_trigger_with_a_bad_value_is_refused_with_the_reason(
    enriched: dict[str, Any], conf: dict[str, Any], says: str
) -> None:
    api: AirflowApi = enriched["api"]
    with pytest.raises(AirflowError, match=says):
        api.trigger("enrich_reviews", conf)


def run_with_connection(
    api: AirflowApi, dag_id: str, conf: dict[str, Any], conn_id: str, connection: dict[str, Any]
) -> str:
    """A manual run of ``dag_id`` (unpaused for it) while Airflow keeps ``connection`` as ``conn_id``; the
    connection is deleted and the DAG's pause state restored afterwards. Returns the successful run's id."""
    paused = api.is_paused(dag_id)
    api.set_connection(conn_id, **connection)
    api.set_paused(dag_id, False)
    try:
        run_id = api.trigger(dag_id, conf)
        assert api.wait_run(dag_id, run_id) == "success"
        return run_id
    finally:
        api.set_paused(dag_id, paused)
        api.delete_connection(conn_id)


@pytest.mark.reliability
def test_an_llm_key_kept_by_airflow_leaks_nowhere(
    enriched: dict[str, Any], settings: Settings, record_property
) -> None:  # type: ignore[no-untyped-def]
    """The LLM key kept as Airflow keeps it: a connection in its metadata database, created through the REST
    API as a user does in Admin → Connections. An LLM enrich run through Airflow uses it against a local
    test server that refuses any other key; afterwards the key is in no run, rendered field, task log, XCom,
    asset event, table, file of the state folder, row of the Airflow database, or process environment."""
    import secrets

    from ..fault_server import FaultServer
    from ..secret_sweep import after_airflow_run, in_airflow_database, in_airflow_runs, in_tables

    api: AirflowApi = enriched["api"]
    secret = "sk-airflow-" + secrets.token_hex(16)
    canary = "canary-" + secrets.token_hex(8)  # no secret, given where the sweep must look: it has to find it
    model = "airflow-connection-" + secrets.token_hex(4)  # a model of its own: no cached answer
    with FaultServer(api_key=secret, max_lifetime_s=1200) as server:
        # the test server has no rate limit: the default pacing (200k tokens/min) would make this run wait
        extra = {"model": model, "rpm": 600_000, "tpm": 1_000_000_000}
        connection = {"conn_type": "openai", "host": server.base_url, "password": secret, "extra": extra}
        conf = {"start": LO.date().isoformat(), "end": HI.date().isoformat(), "extractor": "llm", "note": canary}
        run_id = run_with_connection(api, "enrich_reviews", conf, "llm_default", connection)
    assert server.requests > 0 and {r.authorization for r in server.records} == {f"Bearer {secret}"}
    window = f"review_ts >= '{LO.isoformat()}' and review_ts < '{HI.isoformat()}'"
    rows = scan(settings, "features.review_keywords", window)
    assert {r["model"] for r in rows if r["extractor"] == "llm"} == {model}, "the run did not use the connection"
    mine = [r for r in metrics(settings) if r["run_id"] == run_id]
    assert mine and mine[0]["calls"] > 0

    assert in_airflow_runs([canary], api, "enrich_reviews", [run_id]) and in_airflow_database([canary], settings)
    assert in_tables([model], get_catalog(settings)), "the sweep reads no table rows"
    found = after_airflow_run([secret], api, "enrich_reviews", run_id, settings)
    record_property("secrets_searched", 1)
    record_property("secrets_found", len(found))
    assert found == []


def _model_rows(settings: Settings, model: str, day: date) -> None:
    """A model version's top-10 lists for the day's users over its places (not promoted: a published
    version is chosen by name, so the services' "newest promoted" model stays whatever it was)."""
    import random

    import pyarrow as pa

    catalog = get_catalog(settings)
    window = f"event_ts >= '{LO.isoformat()}' and event_ts < '{HI.isoformat()}'"
    users = sorted({r["user_id"] for r in scan(settings, "raw.events", window, ("user_id",))})[:40]
    places = sorted({r["place_id"] for r in scan(settings, "features.place_profiles", f"built_for = '{day}'")})
    rng = random.Random(3)
    recs = [
        {"model_version": model, "user_id": u, "rank": rank, "place_id": p, "score": 1.0 / rank, "reason": ["맛"]}
        for u in users
        for rank, p in enumerate(rng.sample(places, 10), start=1)
    ]
    run = {
        "model_version": model,
        "trained_for": day,
        "params": [],
        "input_snapshots": [],
        "metrics": [],
        "promoted": False,
        "forced": False,
        "created_at": datetime.now(timezone.utc),
    }
    for table, rows in (("model.recommendations", recs), ("model.runs", [run])):
        t = catalog.load_table(table)
        schema = t.schema().as_arrow()
        full = [{f.name: r.get(f.name) for f in schema} for r in rows]
        t.append(pa.Table.from_pylist(full, schema=schema))


@pytest.mark.reliability
def test_an_opensearch_password_kept_by_airflow_leaks_nowhere(
    enriched: dict[str, Any], settings: Settings, record_property
) -> None:  # type: ignore[no-untyped-def]
    """publish_index through Airflow, on this module's features, to OpenSearch behind TLS and basic auth
    (a local test server in front of the real node), the password in the `opensearch_default` connection:
    the build loads and validates (a dry run: the aliases stay), and the password is found nowhere."""
    import secrets

    from ..opensearch_proxy import OpenSearchProxy
    from ..secret_sweep import after_airflow_run, in_tables

    api: AirflowApi = enriched["api"]
    api.wait_for_dag("publish_index")
    day = built_for(settings)
    model = "airflow-sweep-" + secrets.token_hex(4)
    _model_rows(settings, model, day)
    secret = "os-" + secrets.token_hex(16)
    with OpenSearchProxy(settings.opensearch_url, tls=True, basic_auth=("placerec", secret)) as proxy:
        extra = {"verify_certs": True, "ca_certs": proxy.ca_cert}
        connection = {"conn_type": "opensearch", "host": proxy.url, "login": "placerec", "password": secret}
        conf = {"start": LO.date().isoformat(), "end": HI.date().isoformat(), "dry_run": True, "model_version": model}
        run_id = run_with_connection(api, "publish_index", conf, "opensearch_default", {**connection, "extra": extra})
        assert proxy.bulk_docs > 0 and proxy.auth_failures == 0, "the build did not go through the proxy"
    rows = [r for r in scan(settings, "ops.index_versions") if r["model_version"] == model]
    assert rows and {r["family"] for r in rows} == {"places", "recommendations", "users"}

    assert in_tables([model], get_catalog(settings)), "the sweep reads no table rows"
    found = after_airflow_run([secret], api, "publish_index", run_id, settings)
    record_property("secrets_searched", 1)
    record_property("secrets_found", len(found))
    assert found == []
