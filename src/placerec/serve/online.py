"""Online click-through per A/B variant, from what the serving API logged (``raw.events``).

An impression is a served item (``event_type = impression`` with a ``request_id``); it is *clicked*
when a ``click`` event names the same request and place. Per variant: impressions, clicked
impressions, CTR and its 95 % interval; and each variant's CTR difference to the first variant listed
(the reference) with its 95 % interval. The intervals resample users (a user's impressions are not
independent of each other), seeded, 1000 draws. Only committed ingest state is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from placerec.settings import Settings

DRAWS = 1000


@dataclass
class VariantCtr:
    variant: str
    model_versions: list[str]
    users: int
    requests: int
    impressions: int
    clicks: int
    ctr: float
    low: float
    high: float
    diff: float | None = None
    """CTR minus the reference variant's (None for the reference itself)."""
    diff_low: float | None = None
    diff_high: float | None = None
    offline_ndcg: float | None = None
    """NDCG@10 (all users) of what the variant serves, in its model's training run (a ``popular``
    variant: that run's popularity row, the same evaluation)."""

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def served_events(start: datetime, end: datetime, settings: Settings | None = None) -> dict[str, list[Any]]:
    """Impressions and clicks with a request id in ``[start, end)``, at the last ingest commit."""
    from placerec.catalog import get_catalog
    from placerec.ingest.commit import committed_snapshot_ids
    from placerec.tables import load_table

    catalog = get_catalog(settings)
    committed = committed_snapshot_ids(["raw.events"], catalog)["raw.events"]
    if not committed:
        return {k: [] for k in ("event_type", "user_id", "place_id", "request_id", "model_version", "variant")}
    rows = (
        load_table(catalog, "raw.events")
        .scan(
            row_filter=(
                f"event_ts >= '{start.isoformat()}' and event_ts < '{end.isoformat()}' "
                "and request_id is not null and event_type in ('impression', 'click')"
            ),
            selected_fields=("event_type", "user_id", "place_id", "request_id", "model_version", "variant"),
            snapshot_id=int(committed),
        )
        .to_arrow()
    )
    return {name: rows.column(name).to_pylist() for name in rows.column_names}


def ctr_by_variant(events: dict[str, list[Any]], order: list[str] | None = None, seed: int = 0) -> list[VariantCtr]:
    """The per-variant table of ``events`` (columns as :func:`served_events` gives them); variants in
    ``order`` first (the first is the reference), then any others by name."""
    clicked = {
        (r, p)
        for t, r, p in zip(events["event_type"], events["request_id"], events["place_id"], strict=True)
        if t == "click"
    }
    per: dict[str, dict[str, list[int]]] = {}
    models: dict[str, set[str]] = {}
    requests: dict[str, set[str]] = {}
    seen: set[tuple[str, str]] = set()
    for t, user, place, request, model, variant in zip(
        events["event_type"],
        events["user_id"],
        events["place_id"],
        events["request_id"],
        events["model_version"],
        events["variant"],
        strict=True,
    ):
        if t != "impression" or variant is None or (request, place) in seen:
            continue
        seen.add((request, place))
        counts = per.setdefault(variant, {}).setdefault(user, [0, 0])
        counts[0] += 1
        counts[1] += (request, place) in clicked
        models.setdefault(variant, set()).add(model or "")
        requests.setdefault(variant, set()).add(request)
    names = [v for v in (order or []) if v in per] + sorted(v for v in per if v not in (order or []))
    rng = np.random.default_rng(seed)
    draws: dict[str, np.ndarray] = {}
    out = []
    for name in names:
        users = np.array(list(per[name].values()), dtype=np.float64)
        shown, hits = users[:, 0], users[:, 1]
        pick = rng.integers(0, len(users), size=(DRAWS, len(users)))
        draws[name] = hits[pick].sum(axis=1) / np.maximum(shown[pick].sum(axis=1), 1)
        ctr = float(hits.sum() / shown.sum())
        low, high = np.percentile(draws[name], [2.5, 97.5])
        out.append(
            VariantCtr(
                name,
                sorted(models[name]),
                len(users),
                len(requests[name]),
                int(shown.sum()),
                int(hits.sum()),
                ctr,
                float(low),
                float(high),
            )
        )
    if out:
        ref = out[0]
        for v in out[1:]:
            d = draws[v.variant] - draws[ref.variant]  # independent users: the draws pair up freely
            v.diff = v.ctr - ref.ctr
            v.diff_low, v.diff_high = (float(x) for x in np.percentile(d, [2.5, 97.5]))
    return out


def with_offline(rows: list[VariantCtr], runs: dict[str, dict[str, float]]) -> list[VariantCtr]:
    """Fill ``offline_ndcg`` from ``runs`` (model version -> method -> NDCG@10 over all users)."""
    served = [m for r in rows for m in r.model_versions if m in runs]
    reference = runs[served[0]] if served else {}
    for r in rows:
        models = [m for m in r.model_versions if m]
        if models == ["popularity"]:
            r.offline_ndcg = reference.get("popularity")
        elif len(models) == 1 and models[0] in runs:
            r.offline_ndcg = runs[models[0]].get("hybrid")
    return rows


def offline_runs(settings: Settings | None = None) -> dict[str, dict[str, float]]:
    """Model version -> method -> NDCG@10 over all users, from ``model.runs``."""
    from placerec.catalog import get_catalog
    from placerec.ui.figures import model_runs

    return {
        r.model_version: {m: seg["all"] for m, seg in r.ndcg.items() if "all" in seg}
        for r in model_runs(get_catalog(settings))
    }


def verdict(rows: list[VariantCtr]) -> str:
    """Whether the variant that is better offline (NDCG@10) is also better online (CTR), and how sure:
    the online difference between the offline winner and the reference variant (or, when the winner is
    the reference, the best other rated variant) with its interval."""
    rated = [r for r in rows if r.offline_ndcg is not None]
    if len(rated) < 2:
        return "offline against online: needs two variants with an offline NDCG@10 (a model run each)"
    ref = rows[0]
    best = max(rated, key=lambda r: r.offline_ndcg or 0.0)
    if best is ref:
        other = max((r for r in rated if r is not ref), key=lambda r: r.offline_ndcg or 0.0)
        d, lo, hi = -(other.diff or 0.0), -(other.diff_high or 0.0), -(other.diff_low or 0.0)
    else:
        other = ref
        d, lo, hi = best.diff or 0.0, best.diff_low or 0.0, best.diff_high or 0.0
    head = (
        f"{best.variant} has the better offline NDCG@10 ({best.offline_ndcg:.4f} vs {other.variant} "
        f"{other.offline_ndcg:.4f}); online CTR {best.variant} minus {other.variant}: {d:+.4f} "
        f"(95 % interval {lo:+.4f} .. {hi:+.4f})"
    )
    if lo > 0:
        return f"offline and online agree: {head}"
    if hi < 0:
        return f"offline and online disagree: {head}; the online result is outside the noise, so it stands"
    return f"online cannot tell yet: {head}; the interval includes 0 (more traffic narrows it)"


def format_ctr(rows: list[VariantCtr]) -> str:
    if not rows:
        return "no served impressions in the interval (is the serving API logging, and has ingest run?)"
    lines = [
        "| variant | model | offline ndcg@10 | users | requests | impressions | clicks | CTR | 95 % interval | vs "
        f"{rows[0].variant} | 95 % interval |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        diff = "" if r.diff is None else f"{r.diff:+.4f}"
        span = "" if r.diff is None else f"{r.diff_low:+.4f} .. {r.diff_high:+.4f}"
        lines.append(
            f"| {r.variant} | {', '.join(m for m in r.model_versions if m) or '-'} | "
            f"{'' if r.offline_ndcg is None else f'{r.offline_ndcg:.4f}'} | {r.users} | {r.requests} | "
            f"{r.impressions} | {r.clicks} | {r.ctr:.4f} | {r.low:.4f} .. {r.high:.4f} | {diff} | {span} |"
        )
    return "\n".join([*lines, "", verdict(rows)])


def record_ctr(rows: list[VariantCtr], start: datetime, end: datetime, settings: Settings | None = None) -> int:
    """Replace ``ops.online_ctr``'s rows of ``[start, end)`` with ``rows`` in one commit; returns how many."""
    from datetime import timezone

    import pyarrow as pa

    from placerec.catalog import ensure_tables_once, get_catalog
    from placerec.tables import load_table

    ensure_tables_once(settings)
    table = load_table(get_catalog(settings), "ops.online_ctr")
    now = datetime.now(timezone.utc)
    text = verdict(rows) if rows else ""
    data = [
        {
            "interval_start": start,
            "interval_end": end,
            "variant": r.variant,
            "model_versions": ",".join(m for m in r.model_versions if m),
            "offline_ndcg": r.offline_ndcg,
            "users": r.users,
            "requests": r.requests,
            "impressions": r.impressions,
            "clicks": r.clicks,
            "ctr": r.ctr,
            "ctr_low": r.low,
            "ctr_high": r.high,
            "reference": rows[0].variant,
            "diff": r.diff,
            "diff_low": r.diff_low,
            "diff_high": r.diff_high,
            "verdict": text,
            "computed_at": now,
        }
        for r in rows
    ]
    frame = pa.Table.from_pylist(data, schema=table.schema().as_arrow())
    table.overwrite(
        frame, overwrite_filter=f"interval_start = '{start.isoformat()}' and interval_end = '{end.isoformat()}'"
    )
    return len(data)
