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


def spark_server_pids(service_home: Path) -> list[int]:
    """The `dev up` Spark Connect server and everything it spawned (Python daemons and workers)."""
    from placerec.dev.process import descendants, read_pid_file

    rec = read_pid_file(service_home / "run" / "spark.pid")
    return [] if rec is None else [rec.pid, *descendants(rec.pid)]
