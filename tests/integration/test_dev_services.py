"""The services started by ``placerec dev up`` answer as the pipelines expect."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator

import pytest

from placerec.dev import airflow, embeddings, postgres, services
from placerec.dev.httpjson import request_json
from placerec.settings import get_settings

pytestmark = pytest.mark.integration


def test_status_all_healthy() -> None:
    rows = {r.name: r for r in services.status()}
    assert list(rows) == ["opensearch", "embeddings", "spark", "postgres", "airflow"]
    assert all(r.healthy for r in rows.values()), {n: r.detail for n, r in rows.items()}


def test_opensearch_has_knn_plugin_and_painless_module() -> None:
    nodes = request_json(f"{get_settings().opensearch_url}/_nodes/plugins")["nodes"]
    (node,) = nodes.values()
    assert "opensearch-knn" in {p["name"] for p in node["plugins"]}
    assert "lang-painless" in {m["name"] for m in node["modules"]}


@pytest.fixture
def knn_index() -> Iterator[str]:
    url = get_settings().opensearch_url
    name = f"it-knn-{uuid.uuid4().hex[:8]}"
    request_json(
        f"{url}/{name}",
        method="PUT",
        body={
            "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {
                "properties": {
                    "v": {
                        "type": "knn_vector",
                        "dimension": 3,
                        "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
                    }
                }
            },
        },
    )
    yield name
    request_json(f"{url}/{name}", method="DELETE")


def test_lucene_knn_query(knn_index: str) -> None:
    url = get_settings().opensearch_url
    for doc_id, vec in {"east": [1, 0, 0], "north": [0, 1, 0], "up": [0, 0, 1]}.items():
        request_json(f"{url}/{knn_index}/_doc/{doc_id}", method="PUT", body={"v": vec})
    request_json(f"{url}/{knn_index}/_refresh", method="POST")
    res = request_json(
        f"{url}/{knn_index}/_search",
        method="POST",
        body={"size": 2, "query": {"knn": {"v": {"vector": [0.9, 0.2, 0.0], "k": 2}}}},
    )
    assert [h["_id"] for h in res["hits"]["hits"]] == ["east", "north"]


def test_embeddings_korean_vector() -> None:
    settings = get_settings()
    model, vectors = embeddings.embed(settings, ["서울 성수동 분위기 좋은 카페", "부산 해운대 횟집"])
    assert model
    assert len(vectors) == 2
    assert all(len(v) == 384 for v in vectors)
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0, rel_tol=1e-3)


def test_postgres_socket_only_peer_auth() -> None:
    import psycopg2

    settings = get_settings()
    ok, detail = postgres.probe(settings)
    assert ok, detail
    assert detail.startswith("PostgreSQL ") and str(postgres.socket_path(settings)) in detail
    conn = psycopg2.connect(dbname="airflow", user=postgres.db_user(), host=str(postgres.run_dir(settings)))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('listen_addresses'), current_setting('max_connections')")
            assert cur.fetchone() == ("", "100")  # no TCP listener at all
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone() == (False,)  # Airflow's role only owns its database
    finally:
        conn.close()
    assert (postgres.data_dir(settings) / "pg_hba.conf").read_text() == postgres.HBA  # local + peer only


def test_airflow_health_and_cli() -> None:
    import psycopg2

    settings = get_settings()
    ok, detail = airflow.probe(settings)
    assert ok, detail
    assert "metadatabase=healthy" in detail
    assert airflow.airflow_env(settings)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    # the components heartbeat into *this* PostgreSQL: Airflow's metadata lives there, migrated by standalone
    conn = psycopg2.connect(dbname="airflow", user=postgres.db_user(), host=str(postgres.run_dir(settings)))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM alembic_version")
            assert cur.fetchone() == (1,)
            cur.execute(
                "SELECT job_type FROM job WHERE state = 'running' AND latest_heartbeat > now() - interval '2 minutes'"
            )
            alive = {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    assert {"SchedulerJob", "DagProcessorJob", "TriggererJob"} <= alive
    out = airflow.airflow_cli(["connections", "get", "spark_default", "-o", "json"], timeout=120).stdout
    (conn,) = json.loads(out)
    assert conn["conn_type"] == "spark"
    assert conn["host"] == settings.spark_master
