"""A small client for the Airflow 3 REST API (``/api/v2``) of the local instance.

Used by ``placerec demo`` and the integration tests to unpause DAGs, start backfills and wait
for the scheduler to finish them; the same calls a person makes in the UI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

from placerec.dev.httpjson import ProbeError, request_json
from placerec.settings import Settings, get_settings

TERMINAL_STATES = frozenset({"success", "failed"})
POLL_SECONDS = 1.0
"""Between two looks at a run's state: a handful of small API calls, and what a waiter loses at most."""
BACKFILL_MARK_SECONDS = 45.0
"""The scheduler marks ended backfills complete every 30 s."""


class AirflowError(RuntimeError):
    """The Airflow API refused a request or a run did not finish as expected."""


@dataclass(frozen=True)
class RunState:
    run_id: str
    logical_date: str
    state: str
    run_type: str


class AirflowApi:
    """REST calls against ``settings.airflow_url``: no login in dev mode (all admins), else signed in as
    ``airflow_username`` (a JWT from ``/auth/token``, taken once and again when refused)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.base = self.settings.airflow_url + "/api/v2"
        self._token: str | None = None

    def _headers(self, renew: bool = False) -> dict[str, str]:
        if self.settings.dev_mode:
            return {}
        if self._token is None or renew:
            self._token = self._sign_in()
        return {"Authorization": f"Bearer {self._token}"}

    def _sign_in(self) -> str:
        s = self.settings
        password = s.airflow_password
        if not password:
            from placerec.dev.airflow import passwords_file

            try:
                password = json.loads(passwords_file(s).read_text()).get(s.airflow_username, "")
            except (OSError, ValueError):
                password = ""
        if not password:
            raise AirflowError(f"no password for Airflow user {s.airflow_username!r}: set PLACEREC_AIRFLOW_PASSWORD")
        try:
            answer = request_json(
                s.airflow_url + "/auth/token",
                method="POST",
                body={"username": s.airflow_username, "password": password},
                timeout=30.0,
            )
        except ProbeError as exc:
            raise AirflowError(f"signing in to Airflow as {s.airflow_username!r} failed: {exc}") from None
        return str(answer["access_token"])

    def _call(self, path: str, method: str = "GET", body: Any = None, timeout: float = 30.0) -> Any:
        try:
            url = self.base + path
            try:
                return request_json(url, method=method, body=body, timeout=timeout, headers=self._headers())
            except ProbeError as exc:
                if "HTTP 401" not in str(exc) or self.settings.dev_mode:
                    raise
                headers = self._headers(renew=True)  # the token expired: sign in again, once
                return request_json(url, method=method, body=body, timeout=timeout, headers=headers)
        except ProbeError as exc:
            raise AirflowError(str(exc)) from exc

    def get(self, path: str) -> Any:
        """Any GET of the REST API below ``/api/v2`` (e.g. ``/dags/x/dagRuns``), decoded."""
        return self._call(path)

    def set_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """Create or replace the Airflow connection ``conn_id`` (host, login, password, port, schema, extra:
        a dict is sent as its JSON text); Airflow keeps the password encrypted with its Fernet key."""
        body: dict[str, Any] = {"connection_id": conn_id, "conn_type": conn_type, **fields}
        if isinstance(body.get("extra"), dict):
            body["extra"] = json.dumps(body["extra"])
        self.delete_connection(conn_id)
        self._call("/connections", method="POST", body=body)

    def delete_connection(self, conn_id: str) -> bool:
        """Delete the connection ``conn_id``; False when there was none."""
        try:
            self._call(f"/connections/{quote(conn_id, safe='')}", method="DELETE")
        except AirflowError as exc:
            if "HTTP 404" in str(exc):
                return False
            raise
        return True

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id``; fail with its import error if any."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._call(f"/dags/{dag_id}")  # type: ignore[no-any-return]
            except AirflowError as exc:
                if "HTTP 404" not in str(exc) or time.monotonic() > deadline:
                    errors = self._call("/importErrors").get("import_errors", [])
                    raise AirflowError(f"DAG {dag_id} not available: {exc}; import errors: {errors}") from exc
            time.sleep(3)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._call(f"/dags/{dag_id}", method="PATCH", body={"is_paused": paused})

    def create_backfill(
        self,
        dag_id: str,
        first: date,
        last: date,
        *,
        reprocess: str = "completed",
        max_active_runs: int = 1,
        conf: dict[str, Any] | None = None,
    ) -> int:
        """Backfill the runs whose logical dates fall in ``[first, last]``; returns the backfill id.

        Airflow refuses a backfill while another of the DAG has no ``completed_at``, which its scheduler
        sets up to 30 s after that one's last run ended (see :meth:`wait_backfill`): a refusal is
        tried again until no backfill of the DAG is active, for :data:`BACKFILL_MARK_SECONDS` at most.
        """
        body = {
            "dag_id": dag_id,
            "from_date": datetime(first.year, first.month, first.day, tzinfo=timezone.utc).isoformat(),
            "to_date": datetime(last.year, last.month, last.day, tzinfo=timezone.utc).isoformat(),
            "reprocess_behavior": reprocess,
            "max_active_runs": max_active_runs,
            "dag_run_conf": conf or {},
        }
        deadline = time.monotonic() + BACKFILL_MARK_SECONDS
        while True:
            try:
                return int(self._call("/backfills", method="POST", body=body)["id"])
            except AirflowError as exc:
                if "HTTP 409" not in str(exc) or time.monotonic() > deadline:
                    raise
            while self.active_backfills(dag_id) and time.monotonic() <= deadline:
                time.sleep(POLL_SECONDS)

    def backfill(self, backfill_id: int) -> dict[str, Any]:
        return self._call(f"/backfills/{backfill_id}")  # type: ignore[no-any-return]

    def active_backfills(self, dag_id: str) -> list[dict[str, Any]]:
        found = self._call("/backfills?" + urlencode({"dag_id": dag_id, "limit": 100}))
        return [b for b in found.get("backfills", []) if not b.get("completed_at")]

    def runs(self, dag_id: str, first: date, last: date) -> list[RunState]:
        """DAG runs whose logical date is in ``[first, last]`` (inclusive days)."""
        query = urlencode(
            {
                "logical_date_gte": f"{first.isoformat()}T00:00:00Z",
                "logical_date_lte": f"{last.isoformat()}T23:59:59Z",
                "limit": 1000,
                "order_by": "logical_date",
            }
        )
        found = self._call(f"/dags/{dag_id}/dagRuns?{query}")
        return [RunState(r["dag_run_id"], r["logical_date"], r["state"], r["run_type"]) for r in found["dag_runs"]]

    def wait_backfill(
        self, backfill_id: int, dag_id: str, first: date, last: date, timeout: float = 3600.0, progress: Any = None
    ) -> list[RunState]:
        """Wait until every run of the backfill has ended; return its runs. Raises if any run failed.

        Done as soon as each day of ``[first, last]`` has a run and none is queued or running: the
        scheduler sets the backfill's ``completed_at`` only every 30 s, which a waiter need not wait for
        (the backfill queued or cleared all its runs when it was created).
        """
        deadline = time.monotonic() + timeout
        days = {(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)}
        last_report = ""
        while True:
            info = self.backfill(backfill_id)
            runs = self.runs(dag_id, first, last)
            report = ", ".join(f"{r.logical_date[:10]}={r.state}" for r in runs)
            if progress and report != last_report:
                progress(report)
                last_report = report
            ended = all(r.state in TERMINAL_STATES for r in runs)
            if ended and (info.get("completed_at") or days <= {r.logical_date[:10] for r in runs}):
                break
            if time.monotonic() > deadline:
                raise AirflowError(f"backfill {backfill_id} not finished after {timeout:.0f}s: {report}")
            time.sleep(POLL_SECONDS)
        failed = [r for r in runs if r.state != "success"]
        if failed:
            raise AirflowError(f"backfill {backfill_id}: runs not successful: {failed}")
        return runs

    def asset_events(self, uri: str) -> list[dict[str, Any]]:
        """Events of the Asset with ``uri`` (newest last), e.g. emitted by a task's outlets."""
        assets = self._call("/assets?" + urlencode({"uri_pattern": uri, "limit": 100}))["assets"]
        ids = [a["id"] for a in assets if a["uri"] == uri]
        if not ids:
            return []
        found = self._call("/assets/events?" + urlencode({"asset_id": ids[0], "limit": 1000}))
        return found["asset_events"]  # type: ignore[no-any-return]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._call(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]  # type: ignore[no-any-return]

    def task_tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of one task instance, oldest first (start and end dates, state, try number)."""
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/tries"
        tries: list[dict[str, Any]] = self._call(path)["task_instances"]
        return sorted(tries, key=lambda t: int(t["try_number"]))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None) -> str:
        """The text of a task's log (its latest try unless ``try_number``), one event per line."""
        if try_number is None:
            ti = self._call(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            try_number = int(ti["try_number"])
        found = self._call(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        )
        content = found.get("content") if isinstance(found, dict) else found
        lines = content if isinstance(content, list) else [content]
        return "\n".join(line.get("event", "") if isinstance(line, dict) else str(line) for line in lines)

    def dag_runs(self, dag_id: str, *, since: datetime | None = None) -> list[dict[str, Any]]:
        """Runs of ``dag_id`` (any type) created to run after ``since``, oldest first."""
        query: dict[str, Any] = {"limit": 1000, "order_by": "run_after"}
        if since is not None:
            query["run_after_gte"] = since.isoformat()
        return self._call(f"/dags/{dag_id}/dagRuns?{urlencode(query)}")["dag_runs"]  # type: ignore[no-any-return]

    def queued_asset_events(self, dag_id: str) -> list[dict[str, Any]]:
        """Asset events waiting to trigger ``dag_id`` (not yet consumed by a run)."""
        try:
            found = self._call(f"/dags/{dag_id}/assets/queuedEvents")
        except AirflowError as exc:
            if "HTTP 404" in str(exc):  # nothing queued
                return []
            raise
        return found.get("queued_events", [])  # type: ignore[no-any-return]

    def wait_asset_triggered(
        self,
        dag_id: str,
        since: datetime,
        done: Callable[[], bool],
        *,
        timeout: float = 3600.0,
        progress: Callable[[str], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until ``dag_id`` has no queued or running run, no queued asset event, and ``done()``.

        Raises if a run that started after ``since`` failed, or on timeout.
        """
        deadline = time.monotonic() + timeout
        last_report = ""
        while True:
            runs = self.dag_runs(dag_id, since=since)
            failed = [r["dag_run_id"] for r in runs if r["state"] == "failed"]
            if failed:
                raise AirflowError(f"{dag_id}: runs failed: {failed}")
            report = ", ".join(f"{r['dag_run_id'][-25:]}={r['state']}" for r in runs) or "no run yet"
            if progress and report != last_report:
                progress(report)
                last_report = report
            busy = [r for r in runs if r["state"] not in TERMINAL_STATES]
            if not busy and not self.queued_asset_events(dag_id) and done():
                return runs
            if time.monotonic() > deadline:
                raise AirflowError(f"{dag_id} not finished after {timeout:.0f}s: {report}")
            time.sleep(POLL_SECONDS)

    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        *,
        logical_date: datetime | None = None,
        run_id: str | None = None,
        data_interval: tuple[datetime, datetime] | None = None,
    ) -> str:
        """A manual run (now, without a logical date, unless one is given); returns its run id.

        A data-interval DAG's manual run at logical date ``L`` covers the interval that ends at ``L``,
        unless ``data_interval`` is given: then it is that interval, as a scheduled or backfill run
        at ``L`` = its start has (a later backfill of that day then reprocesses this very run).
        Airflow accepts a logical date in the future, then its scheduler never starts the run (it
        logs "Logical date is in future" every second): refused here instead.
        """
        if logical_date is not None and logical_date > datetime.now(timezone.utc):
            raise ValueError(f"logical date {logical_date.isoformat()} is in the future: Airflow would never run it")
        body: dict[str, Any] = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        if data_interval is not None:
            body["data_interval_start"], body["data_interval_end"] = (t.isoformat() for t in data_interval)
        return str(self._call(f"/dags/{dag_id}/dagRuns", method="POST", body=body)["dag_run_id"])

    def misaligned_runs(self, dag_id: str, first: date, last: date) -> list[dict[str, Any]]:
        """Runs with a logical date in ``[first, last]`` whose data interval does not start at it: manual
        runs (their interval ends at the logical date). A backfill of those days would take them over
        and rerun them with their own, other, interval."""
        query = urlencode(
            {
                "logical_date_gte": f"{first.isoformat()}T00:00:00Z",
                "logical_date_lte": f"{last.isoformat()}T23:59:59Z",
                "limit": 1000,
            }
        )
        runs = self._call(f"/dags/{dag_id}/dagRuns?{query}")["dag_runs"]
        return [r for r in runs if r.get("data_interval_start") and r["data_interval_start"] != r["logical_date"]]

    def delete_run(self, dag_id: str, run_id: str) -> None:
        self._call(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}", method="DELETE")

    def delete_runs_at(self, dag_id: str, logical_date: datetime) -> int:
        """Delete the runs of ``dag_id`` at ``logical_date`` (so a new run may take it); returns how many."""
        query = urlencode({"logical_date_gte": logical_date.isoformat(), "logical_date_lte": logical_date.isoformat()})
        runs = self._call(f"/dags/{dag_id}/dagRuns?{query}")["dag_runs"]
        for run in runs:
            self._call(f"/dags/{dag_id}/dagRuns/{quote(run['dag_run_id'], safe='')}", method="DELETE")
        return len(runs)

    def is_paused(self, dag_id: str) -> bool:
        return bool(self._call(f"/dags/{dag_id}")["is_paused"])

    def wait_run(
        self, dag_id: str, run_id: str, timeout: float = 1800.0, progress: Callable[[str], None] | None = None
    ) -> str:
        """Wait for one run to finish; returns its final state."""
        deadline = time.monotonic() + timeout
        last_report = ""
        while True:
            state = str(self._call(f"/dags/{dag_id}/dagRuns/{run_id}")["state"])
            if state == "queued" and self.is_paused(dag_id):
                raise AirflowError(f"{dag_id} is paused: its run {run_id} stays queued until the DAG is unpaused")
            if progress:
                tasks = self.task_instances(dag_id, run_id)
                report = ", ".join(f"{t['task_id']}={t['state']}" for t in tasks)
                if report != last_report:
                    progress(report)
                    last_report = report
            if state in TERMINAL_STATES:
                return state
            if time.monotonic() > deadline:
                raise AirflowError(f"{dag_id} run {run_id} still {state} after {timeout:.0f}s")
            time.sleep(POLL_SECONDS)
