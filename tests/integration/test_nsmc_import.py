"""`placerec import-nsmc` on the real NSMC file (first reviews only, to keep CI fast): real Spark, real Iceberg."""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from placerec.catalog import get_catalog
from placerec.settings import Settings

from ..conftest import NSMC_DIR, SERVICE_HOME

pytestmark = pytest.mark.integration

LIMIT = 1000  # the first 1,000 reviews span 80 days
TSV = NSMC_DIR / "reviews.tsv.gz"


def expected_from_source() -> dict[str, object]:
    """Read the raw file directly, independently of the mapper."""
    with gzip.open(TSV, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        rows = [dict(zip(header, r, strict=False)) for _, r in zip(range(LIMIT), reader, strict=False)]
    empty = sum(1 for r in rows if not (r.get("review") or "").strip())
    return {"rows": len(rows), "empty_text": empty, "movies": len({r["movie_id"] for r in rows})}


def run_import(home: Path) -> str:
    env = {**os.environ, "PLACEREC_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "placerec.cli", "import-nsmc", str(TSV), "--limit", str(LIMIT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def nsmc_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not TSV.is_file():
        pytest.skip(f"NSMC data not found at {TSV} (it lives in ../shared/data/nsmc next to the repo)")
    home = tmp_path_factory.mktemp("nsmc-home")
    (home / "cache").symlink_to(SERVICE_HOME / "cache", target_is_directory=True)
    return home


def counts(home: Path) -> dict[str, object]:
    catalog = get_catalog(Settings(home=home))
    events = catalog.load_table("raw.events").scan(selected_fields=("event_id", "event_type", "rating")).to_arrow()
    reviews = catalog.load_table("raw.reviews").scan(selected_fields=("review_id", "rating")).to_arrow()
    places = catalog.load_table("raw.places").scan(selected_fields=("place_id", "category")).to_arrow()
    quarantine = catalog.load_table("raw.quarantine").scan(selected_fields=("reason", "feed")).to_arrow().to_pylist()
    return {
        "events": events.num_rows,
        "distinct_events": len(set(events.column("event_id").to_pylist())),
        "event_types": set(events.column("event_type").to_pylist()),
        "reviews": reviews.num_rows,
        "ratings": (min(reviews.column("rating").to_pylist()), max(reviews.column("rating").to_pylist())),
        "places": places.num_rows,
        "categories": set(places.column("category").to_pylist()),
        "quarantine": sorted((q["feed"], q["reason"]) for q in quarantine),
    }


def test_import_nsmc_maps_reviews_and_is_idempotent(nsmc_home: Path) -> None:
    expected = expected_from_source()
    run_import(nsmc_home)
    first = counts(nsmc_home)
    assert first["events"] == first["distinct_events"] == expected["rows"]
    assert first["event_types"] == {"review"}
    assert first["reviews"] == expected["rows"] - expected["empty_text"]  # type: ignore[operator]
    assert first["quarantine"] == [("reviews", "missing_field")] * expected["empty_text"]  # type: ignore[operator]
    assert first["places"] == expected["movies"] and first["categories"] == {"영화"}
    lo, hi = first["ratings"]  # type: ignore[misc]
    assert 1 <= lo and hi <= 10 and hi > 5  # the 10-point scale is kept
    run_import(nsmc_home)
    assert counts(nsmc_home) == first
