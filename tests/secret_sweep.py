"""Look for secrets everywhere a run leaves traces: every table's rows and metadata, every file under
the state folders (logs, Spark's work and temp files), and the environment and command line of
processes (the Spark server and its Python workers). Returns where each secret was found."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 256 * 1024 * 1024


def in_tables(secrets: list[str], catalog: Any) -> list[str]:
    """Every row of every table (strings, lists, maps) and each table's metadata (snapshot summaries, properties)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    hits = []
    for namespace in catalog.list_namespaces():
        for identifier in catalog.list_tables(namespace):
            name = ".".join(identifier)
            table = catalog.load_table(name)
            metadata = table.metadata.model_dump_json()
            hits += [f"{name} metadata" for s in secrets if s in metadata]
            rows = table.scan().to_arrow()
            for column in rows.column_names:
                values = rows[column]
                if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
                    values = pa.array([json.dumps(v, default=str) for v in values.to_pylist()], pa.string())
                for s in secrets:
                    if pc.any(pc.match_substring(values, s)).as_py():
                        hits.append(f"{name}.{column}")
    return hits


def in_files(secrets: list[str], folders: Iterable[Path]) -> list[str]:
    """Every regular file below ``folders`` (symbolic links not followed), raw bytes."""
    needles = [s.encode() for s in secrets]
    hits = []
    for folder in folders:
        for root, _dirs, files in os.walk(folder):  # followlinks=False: the shared download cache is not ours
            for name in files:
                path = Path(root) / name
                try:
                    if path.is_symlink() or path.stat().st_size > MAX_FILE_BYTES:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                hits += [str(path) for n in needles if n in data]
    return hits


def in_processes(secrets: list[str], pids: Iterable[int]) -> list[str]:
    """The environment and command line of each live process."""
    needles = [s.encode() for s in secrets]
    hits = []
    for pid in pids:
        for part in ("environ", "cmdline"):
            try:
                data = Path(f"/proc/{pid}/{part}").read_bytes()
            except OSError:  # gone, or not ours to read
                continue
            hits += [f"pid {pid} {part}" for n in needles if n in data]
    return hits


def service_pids(service_home: Path, service: str) -> list[int]:
    """A `dev up` service and everything it spawned: for ``spark`` the Connect server's Python daemons and
    workers, for ``airflow`` the scheduler, API server and task runners."""
    from placerec.dev.process import descendants, read_pid_file

    rec = read_pid_file(service_home / "run" / f"{service}.pid")
    return [] if rec is None else [rec.pid, *descendants(rec.pid)]


def in_airflow_runs(secrets: list[str], api: Any, dag_id: str, run_ids: Iterable[str]) -> list[str]:
    """What Airflow shows of each run, through its REST API: the run (conf, note), every task instance
    (rendered fields, every try's log), every XCom value, and every asset event of the DAG's outlets."""
    from urllib.parse import quote

    hits = []
    for run_id in run_ids:
        run = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
        shown = {"run": api.get(run)}
        for ti in api.get(f"{run}/taskInstances")["task_instances"]:
            task = ti["task_id"]
            shown[f"{task} instance"] = api.get(f"{run}/taskInstances/{task}")
            for try_number in range(1, int(ti["try_number"]) + 1):
                shown[f"{task} log {try_number}"] = api.task_log(dag_id, run_id, task, try_number)
            for entry in api.get(f"{run}/taskInstances/{task}/xcomEntries")["xcom_entries"]:
                key = quote(entry["key"], safe="")
                shown[f"{task} xcom {entry['key']}"] = api.get(f"{run}/taskInstances/{task}/xcomEntries/{key}")
        events = api.get(f"/assets/events?source_dag_id={dag_id}&source_run_id={quote(run_id, safe='')}&limit=1000")
        shown["asset events"] = events
        for where, value in shown.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            hits += [f"{dag_id} {run_id} {where}" for s in secrets if s in text]
    return hits


def in_airflow_database(secrets: list[str], settings: Any) -> list[str]:
    """A plain-text dump of Airflow's whole metadata database (XComs, rendered fields, logs, serialized
    DAGs, connections: their passwords must be stored encrypted)."""
    import subprocess

    from placerec.dev import postgres

    dump = subprocess.run(
        [str(postgres.bin_dir(settings) / "pg_dump"), "--data-only", postgres.url(settings)],
        capture_output=True,
        check=True,
        timeout=300,
    ).stdout
    assert b"COPY public.xcom" in dump, "the dump holds no XCom table: wrong database?"
    return [f"airflow database ({len(dump)} bytes)" for s in secrets if s.encode() in dump]


def after_airflow_run(secrets: list[str], api: Any, dag_id: str, run_id: str, settings: Any) -> list[str]:
    """Every place a run through the `dev up` Airflow leaves traces: what Airflow shows of the run, its whole
    database, every table, the state folder's logs, Airflow home and Spark files, and the live processes."""
    from placerec.catalog import get_catalog

    home = Path(settings.home)
    found = in_airflow_runs(secrets, api, dag_id, [run_id])
    found += in_airflow_database(secrets, settings)
    found += in_tables(secrets, get_catalog(settings))
    found += in_files(secrets, [home / "logs", home / "airflow", home / "spark"])
    found += in_processes(secrets, service_pids(home, "spark") + service_pids(home, "airflow"))
    return found
