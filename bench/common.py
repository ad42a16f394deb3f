"""What every benchmark shares: a private state folder, the machine's description, the results file.

Benchmarks import this as ``common`` (they run as ``python bench/<name>.py``, so ``bench/`` is on the
path); the repository root is added too, for ``tests.fault_server``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
# Spark binds its driver to the first non-loopback interface unless told; benchmarks stay on 127.0.0.1.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

# The real services keep their state (and the downloaded jars) here; a benchmark never writes into it.
SERVICE_HOME = Path(os.environ.get("PLACEREC_HOME", REPO_ROOT / ".local")).resolve()


@contextmanager
def private_home(prefix: str) -> Iterator[Path]:
    """A fresh PLACEREC_HOME (catalog, warehouse, landing) sharing only the download cache; removed after."""
    from placerec.settings import get_settings

    home = Path(tempfile.mkdtemp(prefix=f"placerec-bench-{prefix}-"))
    (SERVICE_HOME / "cache").mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(SERVICE_HOME / "cache", target_is_directory=True)
    old = os.environ.get("PLACEREC_HOME")
    os.environ["PLACEREC_HOME"] = str(home)
    get_settings.cache_clear()
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("PLACEREC_HOME", None)
        else:
            os.environ["PLACEREC_HOME"] = old
        get_settings.cache_clear()
        (home / "cache").unlink()  # the link only, never the shared cache behind it
        shutil.rmtree(home, ignore_errors=True)


def quiet_logs() -> None:
    """Spark and the job log chatter at INFO; a benchmark prints one line."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


LOAD_AT_START = os.getloadavg()


@contextmanager
def timed_calls(module: Any, name: str, log: list[tuple[float, float]]) -> Iterator[None]:
    """Record (start, end) monotonic times of every call to ``module.name`` while inside; behaviour unchanged."""
    import functools
    import time

    original = getattr(module, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            log.append((began, time.monotonic()))

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """``module.name = value`` while inside (a benchmark's instrumentation, never a change of behaviour)."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def machine() -> dict[str, Any]:
    """CPU count and model, RAM, Python and platform: what a figure depends on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # The machine may be shared: its load when the benchmark started, and when it wrote the result.
        "loadavg_1_5_15_at_start": [round(x, 2) for x in LOAD_AT_START],
        "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def write_result(result: dict[str, Any]) -> Path:
    """``bench/results/<name>.json``, with the date and machine filled in."""
    result.setdefault("date", now_iso())
    result.setdefault("machine", machine())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{result['name']}.json"
    path.write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def write_review_landing(landing: Path, day: datetime, texts: list[str], tag: str) -> None:
    """One day's review landing file (the ingest job's format), one review per text."""
    from datetime import timedelta

    folder = landing / "reviews" / f"dt={day:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "part-0.jsonl").open("w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            rec = {
                "review_id": f"{tag}-r{i:05d}",
                "place_id": f"{tag}-p{i % 50}",
                "user_id": f"{tag}-u{i}",
                "rating": 4,
                "text": text,
                "ts": (day + timedelta(seconds=30 * i)).isoformat(),
                "source": "demo",
            }
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
