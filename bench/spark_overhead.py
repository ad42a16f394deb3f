"""What a Spark task costs before it touches a row: the long-lived Spark Connect server vs spark-submit.

An empty-interval ingest (a day no landing file exists for: the job lists the landing folder, finds
nothing, records its ``ops.task_metrics`` row) is pure fixed cost. It runs four ways, in one run:

* ``cli_connect``: ``placerec ingest-events`` at a shell, on the ``dev up`` Spark Connect server;
* ``cli_spark_submit``: ``spark-submit --master local[*] jobs/ingest_events.py`` (the same command line
  the Airflow task builds for a ``spark`` connection);
* ``airflow_connect`` / ``airflow_spark_submit``: a manual ``ingest_events`` run through the real
  Airflow with the ``spark_conn_id`` Param empty (the default, ``spark_connect_default``) or
  ``spark_default``; the figure is the ``ingest_landing_files`` task's own duration as Airflow records
  it (start to end of the task process's work), the run's wall time is listed beside it.

Rounds alternate the order (Connect first, then spark-submit first) so drift in the machine's load
falls on both sides; each road's median over the rounds counts. Figure: Connect's per-task seconds;
ratio: Connect / spark-submit for the Airflow task (target <= 0.15), and the same for the CLI beside it
(``ratio_cli``, ``cli_target_met``).

Needs the services (``make up``). Run: ``.venv/bin/python bench/spark_overhead.py``
(writes ``bench/results/spark_overhead.json``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import common

NAME = "spark_overhead"
TARGET_RATIO = 0.15
DAG = "ingest_events"
TASK = "ingest_landing_files"
# 22 days (2 warm-ups + 5 rounds x 4 roads) after the demo's week and before today: a run's logical
# date may be neither before the DAG's start (2026-10-01: no task would run) nor in the future (the
# scheduler never starts it). The landing root is an empty temporary folder, so every interval is
# empty whatever was delivered for these days; Airflow's earlier runs at these dates are replaced.
FIRST_DAY = date(2026, 11, 8)


def cli_connect(day: date, landing: Path) -> dict[str, Any]:
    argv = [str(Path(sys.executable).parent / "placerec"), "ingest-events", "--start", day.isoformat()]
    return _timed([*argv, "--landing", str(landing), "--run-id", f"bench-{NAME}"])


def cli_spark_submit(day: date, landing: Path) -> dict[str, Any]:
    from placerec.maven import spark_jars
    from placerec.settings import get_settings

    s = get_settings()
    argv = [
        str(Path(sys.executable).parent / "spark-submit"),
        "--master",
        s.spark_master,
        "--conf",
        f"spark.driver.memory={s.spark_driver_memory}",
        "--jars",
        ",".join(str(p) for p in spark_jars(s)),
        "--name",
        "placerec-ingest_events",
        str(common.REPO_ROOT / "jobs" / "ingest_events.py"),
        "--start",
        day.isoformat(),
        "--landing",
        str(landing),
        "--run-id",
        f"bench-{NAME}",
    ]
    return _timed(argv)


def _timed(argv: list[str]) -> dict[str, Any]:
    # spark-submit finds its Spark home with the `python3` on PATH: this venv's, as in an activated shell
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
    }
    began = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    if '"skipped": true' not in done.stdout:
        raise RuntimeError(f"expected an empty interval, got: {done.stdout[-500:]}")
    return {"seconds": round(seconds, 3)}


def airflow_run(api: Any, day: date, landing: Path, conn_id: str) -> dict[str, Any]:
    """One manual ingest_events run for ``day``'s interval; the task's recorded duration and the run's wall."""
    logical = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)  # [day, day + 1)
    api.delete_runs_at(DAG, logical)  # an earlier run of this benchmark took the day
    began = time.monotonic()
    run_id = api.trigger(
        DAG,
        {"landing": str(landing), "spark_conn_id": conn_id},
        logical_date=logical,
        run_id=f"bench_{NAME}_{conn_id or 'default'}_{day.isoformat()}_{int(time.time())}",
    )
    state = api.wait_run(DAG, run_id, timeout=900)
    wall = time.monotonic() - began
    if state != "success":
        raise RuntimeError(f"{DAG} run {run_id} ended {state}")
    ti = next(t for t in api.task_instances(DAG, run_id) if t["task_id"] == TASK)
    return {"seconds": round(float(ti["duration"]), 3), "run_wall_s": round(wall, 1), "run_id": run_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    common.quiet_logs()

    from placerec.airflow_api import AirflowApi
    from placerec.settings import get_settings

    api = AirflowApi(get_settings())
    api.wait_for_dag(DAG)
    was_paused = api.is_paused(DAG)
    roads = {
        "cli_connect": lambda d, land: cli_connect(d, land),
        "cli_spark_submit": lambda d, land: cli_spark_submit(d, land),
        "airflow_connect": lambda d, land: airflow_run(api, d, land, ""),
        "airflow_spark_submit": lambda d, land: airflow_run(api, d, land, "spark_default"),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in roads}
    day = FIRST_DAY
    with tempfile.TemporaryDirectory(prefix="placerec-empty-landing-") as tmp:
        landing = Path(tmp)
        api.set_paused(DAG, False)
        try:
            # warm-up, not counted: the first Connect session of the server, the first task process
            for name in ("cli_connect", "airflow_connect"):
                roads[name](day, landing)
                day += timedelta(days=1)
            for r in range(args.rounds):
                connect_first = r % 2 == 0
                for via in ("cli", "airflow"):
                    order = ("connect", "spark_submit") if connect_first else ("spark_submit", "connect")
                    for road in order:
                        name = f"{via}_{road}"
                        runs[name].append({"round": r, **roads[name](day, landing)})
                        day += timedelta(days=1)
                print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]['seconds']}s" for k, v in runs.items()))
        finally:
            api.set_paused(DAG, was_paused)

    median = {name: round(statistics.median(x["seconds"] for x in found), 3) for name, found in runs.items()}
    ratio = {via: round(median[f"{via}_connect"] / median[f"{via}_spark_submit"], 3) for via in ("airflow", "cli")}
    result = {
        "name": NAME,
        "figure": median["airflow_connect"],
        "figure_unit": "seconds per empty-interval ingest task through Airflow on the Spark Connect server (median)",
        "baseline": median["airflow_spark_submit"],
        "baseline_unit": "seconds per the same task with spark-submit --master local[*] (median)",
        "ratio": ratio["airflow"],
        "ratio_cli": ratio["cli"],
        # the figure is a DAG task's; the shell's ratio is reported beside it, against the same bar
        "target": f"ratio <= {TARGET_RATIO} (the Airflow task)",
        "target_met": ratio["airflow"] <= TARGET_RATIO,
        "cli_target_met": ratio["cli"] <= TARGET_RATIO,
        "medians_s": median,
        "rounds": args.rounds,
        "runs": runs,
        "method": (
            f"Empty-interval ingest (days from {FIRST_DAY.isoformat()}, an empty landing folder): listing, no "
            "files, the ops.task_metrics row. CLI: wall time of the whole process (Python start, imports, "
            "session, job). "
            "Airflow: the ingest_landing_files task's duration as Airflow records it, manual runs with the "
            "spark_conn_id Param empty (spark_connect_default) or spark_default (spark-submit, local master, the "
            "jars and driver memory the operator passes); run_wall_s is trigger to run success (scheduler "
            "latency and the two small tasks after it included). One warm-up run each of cli_connect and "
            "airflow_connect first, not counted; then per round each road once, the order alternating "
            "between rounds; medians over the rounds. Services (OpenSearch, embeddings, Airflow, PostgreSQL, "
            "the Connect server) share the 2 cores."
        ),
    }
    path = common.write_result(result)
    print(f"{path}: medians {median}; ratio airflow {ratio['airflow']}, cli {ratio['cli']} (target {TARGET_RATIO})")


if __name__ == "__main__":
    main()
