"""Which prompt version is promoted, and the gold-set scores that put it there (``prompts/registry.json``).

The registry is a file in the repository: promoting a prompt is a reviewed change like any other.
``placerec eval-keywords --promote`` rewrites it only when the new version scores at least as well as
the promoted one (or when forced, which the file records).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def registry_path() -> Path:
    from placerec.enrich.llm import prompts_dir

    return prompts_dir() / "registry.json"


def load(path: Path | None = None) -> dict[str, Any]:
    path = path or registry_path()
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("promoted"), str):
        raise ValueError(f"{path}: expected an object with a 'promoted' prompt version")
    data.setdefault("scores", {})
    return data


def save(data: dict[str, Any], path: Path | None = None) -> None:
    path = path or registry_path()
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def promoted_prompt(path: Path | None = None) -> str:
    """The prompt version runs use when none is given."""
    return str(load(path)["promoted"])
