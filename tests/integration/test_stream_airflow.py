"""``stream_events`` through the real Airflow: a micro-batch takes today's served events into ``raw.events``
(not a part file still being written), a second micro-batch after more files landed adds only those,
and ``ops.online_ctr`` holds the day's CTR per variant.

Today's files come from a landing root of the test's own (the run's ``landing`` Param), with event ids
no other test uses; rows of other files for today are left as they are (ingest keeps them).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from placerec.airflow_api import AirflowApi
from placerec.catalog import get_catalog
from placerec.ingest.commit import committed_snapshot_ids
from placerec.settings import Settings, get_settings

from ..conftest import SERVICE_HOME

pytestmark = pytest.mark.integration

DAG = "stream_events"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return dataclasses.replace(get_settings(), home=SERVICE_HOME)


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[AirflowApi]:
    client = AirflowApi(settings)
    client.wait_for_dag(DAG)
    paused = client.is_paused(DAG)
    client.set_paused(DAG, False)
    yield client
    client.set_paused(DAG, paused)


def _write(root: Path, name: str, tag: str, requests: int, *, part: bool = False) -> list[str]:
    now = datetime.now(timezone.utc)
    folder = root / "events" / f"dt={now.date().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(requests):
        request = f"{tag}-r{r}"
        variant = ("model", "control")[r % 2]
        for pos in (1, 2, 3):
            rows.append(
                {
                    "event_id": f"{request}-{pos}",
                    "event_type": "impression",
                    "ts": now.isoformat(),
                    "user_id": f"{tag}-u{r}",
                    "place_id": f"{tag}-p{pos}",
                    "position": pos,
                    "source": "serve",
                    "request_id": request,
                    "variant": variant,
                }
            )
        rows.append({**rows[-3], "event_id": f"{request}-c", "event_type": "click", "variant": None})
    target = folder / (f".{name}.part" if part else name)
    target.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
    return [str(x["event_id"]) for x in rows]


def _ingested(settings: Settings, ids: set[str]) -> list[dict[str, Any]]:
    catalog = get_catalog(settings)
    snap = committed_snapshot_ids(["raw.events"], catalog)["raw.events"]
    today = datetime.now(timezone.utc).date().isoformat()
    rows = (
        catalog.load_table("raw.events")
        .scan(
            row_filter=f"event_ts >= '{today}T00:00:00+00:00' and source = 'serve'",
            selected_fields=("event_id", "event_type", "variant"),
            snapshot_id=int(snap) if snap else None,
        )
        .to_arrow()
        .to_pylist()
    )
    return [r for r in rows if r["event_id"] in ids]


def test_micro_batches_take_today_once_and_record_online_ctr(
    api: AirflowApi, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    now = datetime.now(timezone.utc)
    if now.hour * 60 + now.minute < 12 or now.hour * 60 + now.minute > 23 * 60 + 45:
        pytest.skip("too close to midnight UTC: the micro-batches would take two days")
    began = datetime.now(timezone.utc)
    root = SERVICE_HOME / "test-landing" / f"stream-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:8]
    first = _write(root, "a.jsonl", f"{tag}a", 20)
    pending = _write(root, "b.jsonl", f"{tag}b", 5, part=True)  # still being written: skipped
    run = api.trigger(DAG, {"landing": str(root)})
    assert api.wait_run(DAG, run, timeout=900) == "success"
    got = _ingested(settings, set(first) | set(pending))
    assert sorted(r["event_id"] for r in got) == sorted(first)

    second = _write(root, "c.jsonl", f"{tag}c", 10)
    run = api.trigger(DAG, {"landing": str(root)})
    assert api.wait_run(DAG, run, timeout=900) == "success"
    got = _ingested(settings, set(first) | set(second))
    assert sorted(r["event_id"] for r in got) == sorted(first + second), "an event lost or counted twice"

    today = datetime.now(timezone.utc).date().isoformat()
    stored = (
        get_catalog(settings)
        .load_table("ops.online_ctr")
        .scan(row_filter=f"interval_start = '{today}T00:00:00+00:00'")
        .to_arrow()
        .to_pylist()
    )
    by_variant = {r["variant"]: r for r in stored}
    assert {"model", "control"} <= set(by_variant)
    # every recorded figure is at least what this test served (other serving today may add to it)
    assert by_variant["model"]["impressions"] >= 15 * 3 and by_variant["control"]["impressions"] >= 15 * 3
    assert 0.0 < by_variant["model"]["ctr"] <= 1.0 and by_variant["model"]["verdict"]
    # the scheduled micro-batches (unpausing starts one at once; the manual runs queue behind it) pass too:
    # Airflow hands a scheduled run its interval as pendulum DateTimes, a manual run has none
    scheduled = [
        r
        for r in api.dag_runs(DAG, since=began - timedelta(minutes=10))
        if r["run_type"] == "scheduled" and r["end_date"] and datetime.fromisoformat(r["start_date"]) >= began
    ]
    assert scheduled and {r["state"] for r in scheduled} == {"success"}, scheduled
