"""Spark's Python worker daemon, ending itself once idle: the Connect server's ``spark.python.daemon.module``.

Spark pools Python workers by environment, and the UDFs of each Spark Connect session carry an
environment of their own (the session's artifact id). The long-lived server therefore starts one
``pyspark.daemon`` per session that runs a UDF, and nothing ever stops it: each stays (~57 MB RSS),
hundreds after a test run. This runs ``pyspark.daemon`` unchanged beside a watchdog thread: once the
daemon has had no worker process for ``PLACEREC_PYTHON_DAEMON_IDLE_SECONDS`` (default 120; Spark
closes a worker idle for a minute), the watchdog sends it SIGTERM, pyspark's own clean shutdown. A
session that runs a UDF later gets a new daemon (Spark restarts one that has quit), for about a
second. The watchdog looks, then signals: a worker forked in between (microseconds, and only after
two idle minutes) would be stopped with it, and its task retried or failed by Spark.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from placerec.dev.process import descendants

IDLE_SECONDS = float(os.environ.get("PLACEREC_PYTHON_DAEMON_IDLE_SECONDS", "120"))
_CHECK_SECONDS = 5.0


def watch(pid: int, idle_seconds: float, check_seconds: float = _CHECK_SECONDS) -> None:
    """Send ``pid`` SIGTERM once it has had no live child for ``idle_seconds``, then return."""
    idle_since = time.monotonic()
    while True:
        time.sleep(check_seconds)
        if descendants(pid):
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= idle_seconds:
            os.kill(pid, signal.SIGTERM)
            return


def main() -> None:
    import runpy

    if IDLE_SECONDS > 0:  # 0: never ends by itself, like pyspark's own
        # started before the daemon forks any worker; a forked worker does not inherit the thread
        threading.Thread(target=watch, args=(os.getpid(), IDLE_SECONDS), name="idle-watch", daemon=True).start()
    # pyspark's daemon exactly as `python -m pyspark.daemon <worker module>` runs it
    runpy.run_module("pyspark.daemon", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
