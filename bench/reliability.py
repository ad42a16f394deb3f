"""The reliability tier's figures: hostile input tried, fuzz examples, faults injected and survived, rows
lost, secrets found.

Runs ``pytest -m reliability`` (``scripts/pytest.sh``, two workers, against the ``dev up`` services) with a
JUnit XML report, and sums the figures the tests record (``record_property``): ``hostile_lines`` and
``hostile_files`` (hand-made hostile lines and landing entries), ``fuzz_lines`` (lines the hypothesis
properties checked), ``faults_injected`` / ``faults_survived`` (SIGKILLs, a stopped node, commit races,
LLM faults), ``rows_lost`` (must be 0), ``secrets_searched`` / ``secrets_found`` (must be 0). A failed test
counts as a fault not survived. The figures are counts, not timings: they hold on any machine.

Needs the services (``make up``). Run: ``.venv/bin/python bench/reliability.py``
(writes ``bench/results/reliability.json``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import common

FIGURES = (
    "hostile_lines",
    "hostile_files",
    "fuzz_lines",
    "faults_injected",
    "faults_survived",
    "rows_lost",
    "secrets_searched",
    "secrets_found",
    "large_file_mb",
)
NOT_COVERED = [
    "the shared Spark Connect server killed during a write (the driver-kill case runs a classic driver in the"
    " killed process instead; killing the shared server would fail every test using it at that moment)",
]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "reliability.xml"
        began = time.monotonic()
        command = ["bash", "scripts/pytest.sh", "-m", "reliability", "-q", "-p", "no:cacheprovider"]
        proc = subprocess.run([*command, f"--junitxml={report}"], cwd=common.REPO_ROOT, check=False)
        seconds = time.monotonic() - began
        tests, totals = _read(report)
    outcomes = Counter(t["outcome"] for t in tests)
    totals["faults_survived"] = totals.get("faults_survived", 0)
    result: dict[str, Any] = {
        "name": "reliability",
        "command": " ".join(command),
        "pytest_exit_code": proc.returncode,
        "seconds": round(seconds, 1),
        "tests": dict(outcomes),
        "figures": {k: totals.get(k, 0) for k in FIGURES},
        "targets_met": {
            "rows_lost_is_0": totals.get("rows_lost", 0) == 0,
            "secrets_found_is_0": totals.get("secrets_found", 0) == 0,
            "every_test_passed": proc.returncode == 0 and outcomes.get("failed", 0) == 0,
        },
        "not_covered": NOT_COVERED,
        "per_test": tests,
    }
    path = common.write_result(result)
    print(f"{path}: {dict(outcomes)}; {result['figures']}")
    return 0 if all(result["targets_met"].values()) else 1


def _read(report: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    tests, totals = [], Counter[str]()
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        props = {p.get("name", ""): int(p.get("value", "0")) for p in case.iter("property")}
        for key, value in props.items():
            totals[key] += value
        name = f"{case.get('classname')}::{case.get('name')}"
        tests.append({"test": name, "outcome": outcome, "seconds": float(case.get("time", 0)), **props})
    return tests, dict(totals)


if __name__ == "__main__":
    sys.exit(main())
