"""The per-run evaluation report: markdown tables with the best values in bold, and the PNG charts."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from placerec.model.report import format_comparisons, format_table, write_report

pytestmark = pytest.mark.unit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def row(method: str, segment: str, recall: float, ndcg: float, diversity: float = 0.5) -> dict[str, Any]:
    return {
        "method": method,
        "segment": segment,
        "recall@10": recall,
        "ndcg@10": ndcg,
        "coverage@10": 0.3,
        "diversity@10": diversity,
        "users": 1200.0,
    }


TABLE = [
    row("popularity", "all", 0.1, 0.05, diversity=math.nan),
    row("als", "all", 0.25, 0.12),
    row("hybrid", "all", 0.2, 0.123456),
    row("popularity", "cold", 0.08, 0.04, diversity=math.nan),
    row("hybrid", "cold", 0.15, 0.09),
]


def test_format_table_bolds_each_best_and_shows_nan_as_dash() -> None:
    lines = format_table(TABLE, "all", 10).splitlines()
    assert lines[0] == "| method | recall@10 | ndcg@10 | coverage@10 | diversity@10 | users |"
    assert lines[1] == "|---|---:|---:|---:|---:|---:|"
    # recall best is als' 0.25, ndcg best is hybrid's 0.123456 shown with 4 decimals; coverage is
    # the same for everyone (no best); diversity ties between als and hybrid (both bold)
    assert lines[2] == "| popularity | 0.1000 | 0.0500 | 0.3000 | – | 1,200 |"
    assert lines[3] == "| als | **0.2500** | 0.1200 | 0.3000 | **0.5000** | 1,200 |"
    assert lines[4] == "| hybrid | 0.2000 | **0.1235** | 0.3000 | **0.5000** | 1,200 |"
    assert len(lines) == 5


def test_format_table_only_uses_the_segment_rows() -> None:
    text = format_table(TABLE, "cold", 10)
    assert "| hybrid | **0.1500** | **0.0900** |" in text
    assert "als" not in text
    with pytest.raises(ValueError, match="no rows for segment 'heavy'"):
        format_table(TABLE, "heavy", 10)


def test_format_table_escapes_pipes_in_method_names() -> None:
    text = format_table([row("als|content", "all", 0.1, 0.1)], "all", 10)
    assert "| als\\|content |" in text


def test_write_report(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "v7"
    path = write_report(
        out,
        title="Train run 2026-11-01",
        model_version="v7",
        summary={"split": "last 7 days held out", "items": "1,234"},
        table=TABLE,
        segments=["all", "cold", "heavy"],
        k=10,
    )
    assert path == out / "report.md"
    for name in ("ndcg_by_segment.png", "recall_by_segment.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 5_000
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Train run 2026-11-01\n")
    assert "- **model version:** v7" in text
    assert "- **split:** last 7 days held out" in text
    assert "## Segment: all" in text
    assert "| als | **0.2500** |" in text
    assert "| popularity | 0.1000 | 0.0500 | 0.3000 | – |" in text
    assert "## Segment: heavy\n\n_No results for this segment._" in text
    assert "![NDCG@10 by segment](ndcg_by_segment.png)" in text
    assert "![Recall@10 by segment](recall_by_segment.png)" in text


def test_importing_the_report_module_does_not_load_matplotlib() -> None:
    code = "import sys, placerec.model.report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_comparisons_get_their_own_table() -> None:
    vs = "ndcg@10 vs popularity"
    table = [
        row("popularity", "cold", 0.08, 0.04),
        {**row("hybrid", "cold", 0.15, 0.05), vs: 0.01, f"{vs} lo": 0.002, f"{vs} hi": 0.018},
        {**row("cf", "cold", 0.1, 0.039), vs: -0.001, f"{vs} lo": -0.004, f"{vs} hi": 0.002},
    ]
    text = format_comparisons(table, ["all", "cold"])
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, hybrid, cf
    assert lines[2] == "| cold | hybrid | ndcg@10 | +0.01000 | +25.0 % | +0.00200 .. +0.01800 | better |"
    assert lines[3].endswith("| -2.5 % | -0.00400 .. +0.00200 | no difference shown |")
    # the comparison keys stay out of the metric table
    assert " vs " not in format_table(table, "cold", 10)
    assert format_comparisons(TABLE, ["all"]) == ""
    only = format_comparisons(table, ["cold"], methods=("hybrid",)).splitlines()
    assert len(only) == 3 and "| hybrid |" in only[2]


def test_training_summary_shows_the_hybrid_against_popularity() -> None:
    from placerec.report import format_training

    vs = "ndcg@10 vs popularity"
    table = [
        row("popularity", "all", 0.1, 0.05),
        {**row("hybrid", "all", 0.2, 0.06), vs: 0.01, f"{vs} lo": -0.001, f"{vs} hi": 0.02},
        {**row("cf", "all", 0.2, 0.04), vs: -0.01, f"{vs} lo": -0.02, f"{vs} hi": -0.001},
    ]
    details = {
        "model_version": "hybrid-x",
        "gate": "passed",
        "promoted": True,
        "test": ["a", "b"],
        "evaluation_users": 1200,
        "blend": {},
        "recommendations": 10,
        "users_recommended": 1,
        "report": "r.md",
        "table": table,
    }
    text = format_training(details)
    assert "| all | hybrid | ndcg@10 | +0.01000 | +20.0 % | -0.00100 .. +0.02000 | no difference shown |" in text
    assert "| all | cf |" not in text
