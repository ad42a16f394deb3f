"""One landing file larger than the Spark driver's whole memory setting ingests, a line at a time.

A Spark of its own (the classic road, in a child process) with a 512 MB driver heap, where every task
runs too (local mode), reads a 600 MB file of valid reviews: each line lands. Had any step held the
file whole (as the old whole-file reader did), the heap could not have. Beside it, a file holding one
600 MB line between two valid ones: the line is quarantined as ``oversized_record``, the others land.
The peak resident memory of each process is printed for the record (the JVM's includes its off-heap
Arrow buffers and code).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from placerec.settings import PROJECT_ROOT

from ..conftest import SERVICE_HOME

pytestmark = pytest.mark.reliability

DRIVER_MEMORY_MB = 512
FILE_MB = 600

CHILD = """
import json, sys
from datetime import datetime
from pathlib import Path
from placerec.ingest.job import run_ingest
from placerec.spark import get_spark

spark = get_spark("large-file")
r = run_ingest(spark, Path(sys.argv[1]), datetime.fromisoformat(sys.argv[2]), datetime.fromisoformat(sys.argv[3]))
print("RESULT " + json.dumps({"read": r.read, "written": r.written, "quarantined": r.quarantined}))
"""


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_file_larger_than_the_driver_memory_streams_through(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    folder = tmp_path / "landing" / "reviews" / "dt=2026-12-20"
    folder.mkdir(parents=True)
    text = "분위기 좋고 음식이 맛있어요 " * 110  # ~1,700 characters, ~4.4 KB in UTF-8
    base = {"place_id": "lp1", "user_id": "lu", "rating": 5, "ts": "2026-12-20T12:00:00+00:00", "text": text}
    path = folder / "reviews-0000.jsonl"
    lines = 0
    with path.open("wb") as out:
        while out.tell() < FILE_MB * 1024 * 1024:
            chunk = b"".join(
                json.dumps({**base, "review_id": f"lr{lines + i}"}, ensure_ascii=False).encode() + b"\n"
                for i in range(1000)
            )
            out.write(chunk)
            lines += 1000
    size_mb = path.stat().st_size / 1024 / 1024
    assert size_mb > DRIVER_MEMORY_MB
    # and one line larger than the driver's memory, between two valid ones (staged as a placeholder)
    one_line = folder / "one-line.jsonl"
    with one_line.open("wb") as out:
        out.write(json.dumps({**base, "review_id": "lr-before"}, ensure_ascii=False).encode() + b"\n")
        for _ in range(FILE_MB):
            out.write(b"x" * (1024 * 1024))
        out.write(b"\n" + json.dumps({**base, "review_id": "lr-after"}, ensure_ascii=False).encode() + b"\n")
    # a state folder of its own: 600 MB of reviews must not land in the catalog other tests read
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(SERVICE_HOME / "cache", target_is_directory=True)
    # a classic Spark of its own: not the Connect mode pyspark marks in the environment once a process has used it
    inherited = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
    env = {
        **inherited,
        "PLACEREC_HOME": str(home),
        "PLACEREC_SPARK_REMOTE": "classic",
        "PLACEREC_SPARK_DRIVER_MEMORY": f"{DRIVER_MEMORY_MB}m",
    }
    start, end = datetime(2026, 12, 20, tzinfo=timezone.utc), datetime(2026, 12, 21, tzinfo=timezone.utc)
    argv = [sys.executable, "-c", CHILD, str(tmp_path / "landing"), start.isoformat(), end.isoformat()]
    proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak: dict[int, float] = {}
    try:
        while proc.poll() is None:
            for child in _descendants(proc.pid):
                try:
                    peak[child] = max(peak.get(child, 0.0), _peak_rss_mb(child))
                except OSError:
                    pass
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    path.unlink()
    one_line.unlink()
    shutil.rmtree(home)  # its 600 MB warehouse
    result = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["read"]["reviews"] == lines + 3 and result["written"]["reviews"] == lines + 2, result
    assert result["quarantined"]["reviews"] == {"oversized_record": 1}, result
    record_property("rows_lost", lines + 2 - result["written"]["reviews"])
    record_property("large_file_mb", round(size_mb))
    top = sorted(peak.values(), reverse=True)[:3]
    print(f"\n{size_mb:.0f} MB file, {lines} lines, driver heap {DRIVER_MEMORY_MB} MB: peak RSS (MB) {top}")


def _descendants(pid: int) -> list[int]:
    from placerec.dev.process import descendants

    return [pid, *descendants(pid)]
