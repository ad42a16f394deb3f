"""DAG integrity: every DAG file imports cleanly and follows the house rules."""

from __future__ import annotations

import ast
import socket
import urllib.request
from pathlib import Path

import pytest

from placerec.orchestration import KNOWN_TAGS

pytestmark = pytest.mark.dags

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
# Modules a DAG file may import at top level: Airflow's authoring API and our thin wiring helpers.
ALLOWED_IMPORT_ROOTS = {"__future__", "airflow", "pendulum", "datetime", "placerec"}
ALLOWED_PLACEREC = {"placerec.orchestration"}


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS_DIR))


def test_there_are_dag_files() -> None:
    assert DAG_FILES, f"no DAG files under {DAGS_DIR}"


def test_dags_import_without_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert {Path(d.fileloc).name for d in dagbag.dags.values()} == {p.name for p in DAG_FILES}


def test_dags_follow_house_rules(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id}: doc_md must explain the DAG"
        assert set(dag.tags) <= KNOWN_TAGS and "placerec" in dag.tags, f"{dag_id}: tags {dag.tags}"
        assert dag.max_active_runs >= 1
        for task in dag.tasks:
            assert task.owner == "placerec", f"{dag_id}.{task.task_id}: owner {task.owner}"
            assert task.retries >= 1, f"{dag_id}.{task.task_id}: retries not set"
            # try numbers grow with every rerun of an interval: an uncapped exponential back-off grows with them
            if task.retry_exponential_backoff:
                assert task.max_retry_delay is not None, f"{dag_id}.{task.task_id}: back-off uncapped"
                assert task.max_retry_delay.total_seconds() <= 300, f"{dag_id}.{task.task_id}: {task.max_retry_delay}"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_import_only_wiring(path: Path) -> None:
    """No heavy or I/O-doing import at module level: only Airflow authoring and placerec wiring."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in ALLOWED_IMPORT_ROOTS, f"{path.name}: imports {name}"
            if name.startswith("placerec"):
                assert name in ALLOWED_PLACEREC, f"{path.name}: imports {name} (use placerec.orchestration)"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_do_no_io_at_parse_time(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing a DAG file opens no socket, fetches no URL and reads no environment variable."""
    import importlib.util
    import os

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{path.name}: network access at parse time")

    touched: list[str] = []
    real_getitem = os.environ.__class__.__getitem__
    real_get = os.environ.__class__.get

    def spy_getitem(self, key):  # type: ignore[no-untyped-def]
        if str(key).startswith(("PLACEREC_", "AIRFLOW_CONN_", "AIRFLOW_VAR_")):
            touched.append(str(key))
        return real_getitem(self, key)

    def spy_get(self, key, default=None):  # type: ignore[no-untyped-def]
        if str(key).startswith(("PLACEREC_", "AIRFLOW_CONN_", "AIRFLOW_VAR_")):
            touched.append(str(key))
        return real_get(self, key, default)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(os.environ.__class__, "__getitem__", spy_getitem)
    monkeypatch.setattr(os.environ.__class__, "get", spy_get)
    spec = importlib.util.spec_from_file_location(f"_dagcheck_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert touched == [], f"{path.name}: reads {touched} at parse time"


def test_scheduled_runs_own_a_non_empty_interval(dagbag) -> None:  # type: ignore[no-untyped-def]
    """Tasks read and overwrite their data interval: a zero-length interval would ingest nothing."""
    import pendulum

    for dag_id, dag in dagbag.dags.items():
        if type(dag.timetable).__name__ == "AssetTriggeredTimetable":
            continue  # asset-triggered runs have no interval of their own: see the next test
        interval = dag.timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 11, 2, tz="UTC"))
        assert interval.start < interval.end, f"{dag_id}: empty data interval {interval}"


def test_asset_triggered_spark_tasks_resolve_their_interval_first(dagbag) -> None:  # type: ignore[no-untyped-def]
    """Airflow 3 gives asset-triggered runs no data interval: every Spark task must wait for resolve_interval."""
    from placerec.orchestration import PlacerecSparkOperator

    asset_dags = [dag for dag in dagbag.dags.values() if type(dag.timetable).__name__ == "AssetTriggeredTimetable"]
    assert asset_dags, "expected at least one asset-triggered DAG (enrich_reviews)"
    for dag in asset_dags:
        spark_tasks = [t for t in dag.tasks if isinstance(t, PlacerecSparkOperator)]
        assert spark_tasks, dag.dag_id
        for t in spark_tasks:
            assert "resolve_interval" in t.get_flat_relative_ids(upstream=True), f"{dag.dag_id}.{t.task_id}"
            assert any("resolve_interval" in str(arg) for arg in t.args), f"{dag.dag_id}.{t.task_id}"


def test_trigger_forms_validate_as_opened_and_say_what_each_field_is(dagbag) -> None:  # type: ignore[no-untyped-def]
    """A manual trigger with the form untouched is valid; every field has a title, a section and a description."""
    for dag_id, dag in dagbag.dags.items():
        assert dag.params.validate() is not None, dag_id  # raises ParamValidationError on a bad default
        for name, param in dag.params.items():
            param = dag.params.get_param(name)
            assert param.description and len(param.description) > 15, f"{dag_id}.{name}: no description"
            assert param.schema.get("title") and param.schema.get("section"), f"{dag_id}.{name}: title/section"


@pytest.mark.parametrize(
    ("dag_id", "conf", "says"),
    [
        ("enrich_reviews", {"start": "2026-13-01"}, "is not a 'date'"),
        ("enrich_reviews", {"start": "yesterday"}, "is not a 'date'"),
        ("train_hybrid", {"end": "2026-11-01T00:00:00"}, "is not a 'date'"),
        ("enrich_reviews", {"budget_tokens": -5}, "less than the minimum of 1"),
        ("enrich_reviews", {"budget_tokens": "5000"}, "is not of type 'null', 'integer'"),
        ("enrich_reviews", {"budget_cost": 0}, "less than or equal to the minimum of 0"),
        ("enrich_reviews", {"extractor": "gpt"}, "is not one of"),
        ("publish_index", {"dry_run": "yes"}, "is not of type 'boolean'"),
    ],
)
def test_trigger_forms_refuse_bad_values_with_the_reason(dagbag, dag_id: str, conf: dict, says: str) -> None:  # type: ignore[no-untyped-def,type-arg]
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dagbag.dags[dag_id].params)
    with pytest.raises(ParamValidationError, match=says):  # as the API server does with a trigger's conf
        params.update(conf)
        params.validate()


def test_optional_params_render_as_not_given(dagbag) -> None:  # type: ignore[no-untyped-def]
    """An empty optional field reaches the CLI as '' (its "not given"), a value as itself, never 'None'."""
    from jinja2 import Environment

    from placerec.orchestration import optional_arg

    template = Environment().from_string(optional_arg("budget_tokens"))
    assert template.render(params={"budget_tokens": None}) == ""
    assert template.render(params={"budget_tokens": 5000}) == "5000"
    enrich = dagbag.dags["enrich_reviews"].get_task("extract_review_keywords")
    assert "None" not in " ".join(enrich.args) and optional_arg("budget_cost") in enrich.args


def test_micro_batches_take_whole_days_and_the_day_before_just_after_midnight() -> None:
    from datetime import datetime, timezone

    from placerec.orchestration import stream_days

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)

    now = at("2026-12-04T13:02:00")
    assert stream_days(at("2026-12-04T12:55:00"), at("2026-12-04T13:00:00"), now) == {
        "start": "2026-12-04T00:00:00+00:00",
        "end": "2026-12-05T00:00:00+00:00",
    }
    # just after midnight: yesterday's last files may have been sealed after its daily run
    assert stream_days(at("2026-12-05T00:00:00"), at("2026-12-05T00:05:00"), now) == {
        "start": "2026-12-04T00:00:00+00:00",
        "end": "2026-12-06T00:00:00+00:00",
    }
    # the run ending at midnight: only the day that ended
    assert stream_days(at("2026-12-04T23:55:00"), at("2026-12-05T00:00:00"), now) == {
        "start": "2026-12-04T00:00:00+00:00",
        "end": "2026-12-05T00:00:00+00:00",
    }
    assert stream_days(None, None, now) == {"start": "2026-12-04T00:00:00+00:00", "end": "2026-12-05T00:00:00+00:00"}
    # a scheduled run's interval as Airflow hands it over: pendulum DateTimes
    import pendulum

    interval = pendulum.datetime(2026, 12, 4, 4, 45, tz="UTC"), pendulum.datetime(2026, 12, 4, 4, 50, tz="UTC")
    days = stream_days(*interval, now)
    assert days == {"start": "2026-12-04T00:00:00+00:00", "end": "2026-12-05T00:00:00+00:00"}
    assert all(type(datetime.fromisoformat(v)) is datetime and datetime.fromisoformat(v).tzinfo for v in days.values())
