"""``placerec eval-keywords``: precision, recall and F1 of an extractor on the labelled gold set.

Matching: a predicted keyword matches a gold keyword when their terms share a head word: the nouns
of each term after Korean morphological analysis (Kiwi), or its predicate stems when a term has no
noun ("친절한 직원" ~ "직원분들", "분위기 좋음" ~ "분위기"). Each gold keyword is matched at most once,
greedily in the prediction's order. Precision = matched / predicted, recall = matched / gold,
micro-averaged over the set; aspect and sentiment agreement are reported on the matched pairs.

Promotion: a prompt version becomes the promoted one (``prompts/registry.json``) only if its F1 is at
least the promoted version's on the same gold set and model; ``force`` overrides and is recorded.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from placerec.enrich import registry
from placerec.settings import PROJECT_ROOT

GOLDSET = PROJECT_ROOT / "tests" / "goldset" / "reviews.jsonl"
_NOUNS = ("NNG", "NNP", "XR", "SL", "SH")
_PREDICATES = ("VA", "VV")


@dataclass(frozen=True)
class GoldReview:
    id: str
    source: str
    text: str
    keywords: tuple[dict[str, str], ...]


def load_goldset(path: Path = GOLDSET) -> list[GoldReview]:
    """The labelled reviews; a clear error naming the line on a bad one."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            out.append(GoldReview(obj["id"], obj["source"], obj["text"], tuple(obj["keywords"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a gold review ({exc})") from None
    if not out:
        raise ValueError(f"{path}: no reviews")
    return out


@functools.lru_cache(maxsize=4096)
def head_words(term: str) -> frozenset[str]:
    """The nouns of a term, else its predicate stems, else the term itself (normalised)."""
    from placerec.enrich.local import tokenize

    tokens = tokenize(term)
    nouns = frozenset(t.form for t in tokens if t.tag in _NOUNS)
    if nouns:
        return nouns
    stems = frozenset(t.form for t in tokens if t.tag in _PREDICATES)
    return stems or frozenset({term.strip()})


def match(predicted: Sequence[dict[str, Any]], gold: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (predicted index, gold index) whose head words overlap."""
    taken: set[int] = set()
    pairs = []
    for i, p in enumerate(predicted):
        words = head_words(str(p["term"]))
        for j, g in enumerate(gold):
            if j not in taken and words & head_words(str(g["term"])):
                taken.add(j)
                pairs.append((i, j))
                break
    return pairs


@dataclass
class Scores:
    reviews: int = 0
    predicted: int = 0
    gold: int = 0
    matched: int = 0
    aspect_agree: int = 0
    sentiment_agree: int = 0
    rejected: int = 0
    by_source: dict[str, dict[str, float]] = field(default_factory=dict)

    @staticmethod
    def prf(predicted: int, gold: int, matched: int) -> tuple[float, float, float]:
        p = matched / predicted if predicted else 0.0
        r = matched / gold if gold else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    def summary(self) -> dict[str, Any]:
        p, r, f1 = self.prf(self.predicted, self.gold, self.matched)
        return {
            "precision": round(p, 4),
            "recall": round(r, 4),
            "f1": round(f1, 4),
            "aspect_accuracy": round(self.aspect_agree / self.matched, 4) if self.matched else 0.0,
            "sentiment_accuracy": round(self.sentiment_agree / self.matched, 4) if self.matched else 0.0,
            **{k: v for k, v in asdict(self).items() if k != "by_source"},
            "by_source": self.by_source,
        }


def score(gold: Sequence[GoldReview], predictions: Sequence[Sequence[dict[str, Any]]], rejected: int = 0) -> Scores:
    """Micro-averaged scores of ``predictions`` (one keyword list per gold review, same order)."""
    total = Scores(reviews=len(gold), rejected=rejected)
    per_source: dict[str, list[int]] = {}
    for review, predicted in zip(gold, predictions, strict=True):
        pairs = match(predicted, review.keywords)
        total.predicted += len(predicted)
        total.gold += len(review.keywords)
        total.matched += len(pairs)
        for i, j in pairs:
            total.aspect_agree += predicted[i].get("aspect") == review.keywords[j].get("aspect")
            total.sentiment_agree += predicted[i].get("sentiment") == review.keywords[j].get("sentiment")
        counts = per_source.setdefault(review.source, [0, 0, 0])
        counts[0] += len(predicted)
        counts[1] += len(review.keywords)
        counts[2] += len(pairs)
    for source, (n_pred, n_gold, n_match) in sorted(per_source.items()):
        p, r, f1 = Scores.prf(n_pred, n_gold, n_match)
        total.by_source[source] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}
    return total


def evaluate(extractor: Any, gold: Sequence[GoldReview]) -> Scores:
    """Run ``extractor`` (local or llm) on the gold texts and score it; a rejected review predicts nothing."""
    results = extractor.extract_many([g.text for g in gold])
    predictions = [[asdict(k) for k in r.keywords] if not r.rejected else [] for r in results]
    return score(gold, predictions, rejected=sum(r.rejected for r in results))


def goldset_digest(path: Path = GOLDSET) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def score_key(extractor: str, model: str, version: str, digest: str) -> str:
    return f"{extractor}|{model}|{version}|gold:{digest}"


def record(extractor: str, model: str, version: str, digest: str, summary: dict[str, Any]) -> None:
    """Keep the scores in the registry (the file the promotion decision reads)."""
    data = registry.load()
    entry = {k: summary[k] for k in ("precision", "recall", "f1", "reviews", "predicted", "gold", "matched")}
    entry["evaluated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data["scores"][score_key(extractor, model, version, digest)] = entry
    registry.save(data)


class PromotionRefused(Exception):
    """The candidate prompt scores below the promoted one."""


def promote(model: str, candidate: str, candidate_f1: float, promoted_f1: float, *, force: bool, digest: str) -> str:
    """Make ``candidate`` the promoted prompt version if it scores at least as well (or ``force``)."""
    data = registry.load()
    current = data["promoted"]
    if candidate_f1 < promoted_f1 and not force:
        raise PromotionRefused(
            f"{candidate} scores F1 {candidate_f1:.4f} below the promoted {current} ({promoted_f1:.4f}) "
            f"with {model}: refused (use --force to promote anyway)"
        )
    data["promoted"] = candidate
    data.setdefault("history", []).append(
        {
            "promoted": candidate,
            "replaced": current,
            "model": model,
            "f1": candidate_f1,
            "previous_f1": promoted_f1,
            "forced": bool(force and candidate_f1 < promoted_f1),
            "goldset": digest,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    registry.save(data)
    return current
