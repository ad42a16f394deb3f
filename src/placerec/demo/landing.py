"""Writing the landing format: ``<root>/<feed>/dt=YYYY-MM-DD/<feed>-NNNN.jsonl``.

UTF-8, one JSON object per line, ``\\n`` line ends, non-ASCII kept as is, at most
``MAX_LINES_PER_FILE`` lines per part file (parts numbered 0000, 0001, ...).
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

MAX_LINES_PER_FILE = 20_000
TRUTH_DIR = "_truth"


def dumps(obj: Any) -> str:
    """One landing line (without the newline): compact, UTF-8 text kept as is, keys in insertion order."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def day_dir(root: Path, feed: str, dt: date) -> Path:
    return root / feed / f"dt={dt.isoformat()}"


def part_name(feed: str, part: int) -> str:
    return f"{feed}-{part:04d}.jsonl"


def clear_day(root: Path, feed: str, dt: date) -> None:
    """Remove one feed's day folder (and nothing else) so that a rerun writes exactly the same files."""
    path = day_dir(root, feed, dt)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def split_parts(n_lines: int, max_lines: int) -> list[tuple[int, int]]:
    """``[start, stop)`` line ranges of the part files for ``n_lines`` lines."""
    if n_lines == 0:
        return []
    return [(s, min(s + max_lines, n_lines)) for s in range(0, n_lines, max_lines)]


def write_lines(path: Path, lines: list[str]) -> int:
    """Write ``lines`` as one file; return its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    path.write_bytes(data)
    return len(data)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_lines(path, [json.dumps(r, ensure_ascii=False) for r in rows])
