"""A fault injector for tests: run one ingest interval in this process and SIGKILL it at a chosen point.

    python tests/fault_ingest.py LANDING START END WHEN STEP [DELAY_SECONDS]

WHEN is ``after`` (once STEP has returned: its commit is made) or ``during`` (DELAY_SECONDS into STEP,
while Spark may still be writing). STEP is one of :data:`STEPS`. The state folder and the Spark road come
from the environment (``PLACEREC_HOME``, ``PLACEREC_SPARK_REMOTE``), as for any job: with ``classic`` the
Spark driver runs in this process's JVM and dies with it. Exits only by the signal; any other exit (the
step never reached) is a failed test.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

STEPS = ("prepare", "load_events", "merge:raw.reviews", "merge:raw.places", "write_quarantine", "record_metrics")


def _kill() -> None:
    """SIGKILL this process, and with it, when it leads its own process group, every process it started
    (a classic Spark's JVM driver dies in the same instant instead of noticing its Python is gone)."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(original: Any, step: str, when: str, target: str, delay: float) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        name = step
        if step == "merge":  # merge_by_key(spark, table, ...)
            name = f"merge:{args[1]}"
        if name != target:
            return original(*args, **kwargs)
        if when == "during":
            threading.Timer(delay, _kill).start()
        out = original(*args, **kwargs)
        _kill()
        return out

    return wrapped


def main(argv: list[str]) -> int:
    from placerec.ingest import commit, job
    from placerec.spark import get_spark

    landing, start, end, when, target = argv[:5]
    delay = float(argv[5]) if len(argv) > 5 else 0.0
    if target not in STEPS or when not in ("after", "during"):
        raise SystemExit(f"unknown fault {when} {target}")
    job.load_events = _wrap(job.load_events, "load_events", when, target, delay)
    job.merge_by_key = _wrap(job.merge_by_key, "merge", when, target, delay)
    job.write_quarantine = _wrap(job.write_quarantine, "write_quarantine", when, target, delay)
    job.record_metrics = _wrap(job.record_metrics, "record_metrics", when, target, delay)
    commit.prepare = _wrap(commit.prepare, "prepare", when, target, delay)
    spark = get_spark("fault-ingest")
    job.run_ingest(spark, Path(landing), datetime.fromisoformat(start), datetime.fromisoformat(end), run_id="faulted")
    print(f"the run ended without reaching {when} {target}", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
