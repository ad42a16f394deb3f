"""The ceiling on generated data: a reference that ranks with the demo world's hidden truth.

Only the demo generator's worlds have one (``<landing>/_truth/users.jsonl`` and ``places.jsonl``): each
user's category and aspect weights and home district, each place's aspect qualities and popularity.
The oracle ranks a user's candidates by :func:`placerec.demo.generator.expected_engagement`: how
strongly the world's feed draws the place to the user (popularity, home district, favourite
categories) times the chance of a view and a click given the user's utility for it, the very
functions the world's sessions are drawn with; so it is about as good as any method can be on that
data, and no method may learn from it. Every table labels it as such, and shows how much of the gap between popularity
and the oracle each method closes. On real data there is no truth: no oracle row.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from placerec.model.hybrid import Split

log = logging.getLogger(__name__)

MIN_COVERAGE = 0.9
"""The truth must know this share of the evaluated users and of the candidate places, else no row
(the data is not the world the truth describes)."""
ORACLE = "oracle"
"""Its method name in evaluation tables."""
ORACLE_LABEL = "oracle: ranks with the generated world's hidden truth (a ceiling, not a method)"


@dataclass(frozen=True)
class Truth:
    users: dict[str, dict[str, object]]
    places: dict[str, dict[str, object]]


def load_truth(folder: Path) -> Truth | None:
    """The hidden truth in ``folder`` (``users.jsonl``, ``places.jsonl``), or None when there is none."""
    users, places = folder / "users.jsonl", folder / "places.jsonl"
    if not (users.is_file() and places.is_file()):
        return None

    def rows(path: Path, key: str) -> dict[str, dict[str, object]]:
        out = {}
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    out[str(row[key])] = row
        return out

    return Truth(rows(users, "user_id"), rows(places, "place_id"))


def oracle_scores(truth: Truth, split: Split, users: np.ndarray) -> np.ndarray | None:
    """``len(users) × items`` utilities (``-inf`` where the truth knows no place), or None when the truth
    does not cover :data:`MIN_COVERAGE` of ``users`` and of the candidate places."""
    from placerec.demo.generator import FEED_CATEGORIES, expected_engagement, utility

    known_users = [str(split.users[u]) in truth.users for u in users]
    candidates = np.flatnonzero(split.candidates)
    known_places = [str(split.items[i]) in truth.places for i in candidates]
    if not users.size or np.mean(known_users) < MIN_COVERAGE or np.mean(known_places) < MIN_COVERAGE:
        log.info(
            "no oracle: the truth knows %.0f%% of the users, %.0f%% of the candidate places",
            100 * np.mean(known_users) if users.size else 0,
            100 * np.mean(known_places) if candidates.size else 0,
        )
        return None
    scores = np.full((len(users), len(split.items)), -np.inf, dtype=np.float64)
    places = [(i, truth.places.get(str(split.items[i]))) for i in range(len(split.items))]
    for row, u in enumerate(users):
        who = truth.users.get(str(split.users[u]))
        if who is None:
            continue
        categories: dict[str, float] = who["category_weights"]  # type: ignore[assignment]
        aspects: dict[str, float] = who["aspect_weights"]  # type: ignore[assignment]
        favourites = set(sorted(categories, key=lambda c: -categories[c])[:FEED_CATEGORIES])
        for i, place in places:
            if place is None:
                continue
            quality: dict[str, float] = place["quality"]  # type: ignore[assignment]
            fit = sum(w * quality.get(a, 0.0) for a, w in aspects.items())
            home, popularity = place["district"] == who["home_district"], float(place["popularity"])  # type: ignore[arg-type]
            u = utility(categories.get(str(place["category"]), 0.0), home, fit, popularity)
            scores[row, i] = expected_engagement(u, popularity, home, str(place["category"]) in favourites)
    return scores
