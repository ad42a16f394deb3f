"""A per-run evaluation report for people: a markdown page with one table per user segment and two
bar charts, written next to the run's other outputs.

Rows of the results table look like ``{"method": "als", "segment": "cold", "recall@10": 0.12, …}``
with the metric keys of :func:`placerec.model.metrics.evaluate`. Every metric there is better
when higher, so the best value of each column is shown in bold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Column order for the metrics evaluate() produces; other numeric keys follow in first-seen order.
_METRIC_ORDER = ("recall", "ndcg", "map", "hit_rate", "coverage", "novelty", "diversity")
_NOT_METRICS = frozenset({"method", "segment"})
_COUNT_KEYS = frozenset({"users"})
MISSING = "–"
# Keys like "ndcg@10 vs popularity" (with " lo"/" hi" bounds) are paired comparisons: their own table.
_VS = " vs "


def _metric_columns(rows: Sequence[Mapping[str, Any]], k: int) -> list[str]:
    present: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in _NOT_METRICS and _VS not in key:
                present.setdefault(key, None)
    known = [f"{name}@{k}" for name in _METRIC_ORDER if f"{name}@{k}" in present]
    rest = [key for key in present if key not in known and key not in _COUNT_KEYS]
    counts = [key for key in present if key in _COUNT_KEYS]
    return known + rest + counts


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _cell(value: Any, column: str, best: float) -> str:
    number = _number(value)
    if math.isnan(number):
        return MISSING
    text = f"{int(number):,}" if column in _COUNT_KEYS else f"{number:.4f}"
    return f"**{text}**" if round(number, 4) == best else text


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def format_table(table: Sequence[Mapping[str, Any]], segment: str, k: int) -> str:
    """The markdown table of one segment: a row per method (in first-seen order), a column per
    metric, 4 decimals, the best value of each metric column in bold (every tied best; none when
    every method shows that value), ``–`` for a missing or nan value.

    Raises ``ValueError`` when the segment has no rows.
    """
    rows = [row for row in table if row.get("segment") == segment]
    if not rows:
        raise ValueError(f"no rows for segment {segment!r}")
    columns = _metric_columns(rows, k)
    best: dict[str, float] = {}
    for column in columns:
        # Compared as shown (4 decimals), so values that print alike are bold alike; when every row
        # shows the best value, bold would single nothing out.
        values = [round(v, 4) for v in (_number(row.get(column)) for row in rows) if not math.isnan(v)]
        top = max(values, default=math.nan)
        singles_out = values.count(top) < len(rows)
        best[column] = top if singles_out and column not in _COUNT_KEYS else math.nan
    lines = [
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        cells = [_cell(row.get(column), column, best[column]) for column in columns]
        lines.append(f"| {_escape(row.get('method', ''))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_comparisons(table: Sequence[Mapping[str, Any]], segments: Sequence[str], methods: Sequence[str] = ()) -> str:
    """One line per (segment, method) row that carries a paired comparison (``<metric> vs <baseline>``
    with ``… lo``/``… hi``): the mean difference, relative to the baseline's mean when the row for the
    baseline is there, and the interval; "" when no row has one. An interval that spans 0 is marked
    "no difference shown": the data cannot separate the two. ``methods`` (if given) limits the lines."""
    lines = []
    for segment in segments:
        rows = [row for row in table if row.get("segment") == segment]
        for row in rows:
            if methods and row.get("method") not in methods:
                continue
            for key in row:
                if _VS not in key or key.endswith((" lo", " hi")):
                    continue
                metric, baseline = key.split(_VS, 1)
                diff, lo, hi = (_number(row.get(k)) for k in (key, f"{key} lo", f"{key} hi"))
                base = next((_number(r.get(metric)) for r in rows if r.get("method") == baseline), math.nan)
                rel = f"{100 * diff / base:+.1f} %" if base and not math.isnan(base) else MISSING
                verdict = "no difference shown" if lo <= 0 <= hi else ("better" if lo > 0 else "worse")
                label = metric if baseline == "popularity" else f"{metric} vs {baseline}"
                lines.append(
                    f"| {segment} | {_escape(row.get('method', ''))} | {_escape(label)} | {diff:+.5f} | {rel} "
                    f"| {lo:+.5f} .. {hi:+.5f} | {verdict} |"
                )
    if not lines:
        return ""
    head = [
        "| segment | method | metric | difference | relative | 95 % interval | verdict |",
        "|---|---|---|---:|---:|---|---|",
    ]
    return "\n".join(head + lines)


def format_protocol(protocol: Mapping[str, Any], k: int) -> str:
    """The data README's protocol (``details["protocol"]`` of a training run) as markdown: its sizes,
    the table with the published figure beside each reproduced row, and the hybrid's paired
    differences to the 30-day popularity row and to our popularity."""
    sizes = ", ".join(f"{key} {value:,}" for key, value in protocol["sizes"].items())
    lines = [
        f"The {protocol['name']} data README's protocol ({sizes}); `published ndcg@{k}` is its table's figure.",
        "",
        format_table(protocol["table"], "protocol", k),
    ]
    versus = format_comparisons(protocol["table"], ["protocol"], methods=("hybrid",))
    if versus:
        lines += ["", "hybrid against them (paired over the same users, 95 % bootstrap interval):", "", versus]
    return "\n".join(lines)


def _bar_chart(
    path: Path, table: Sequence[Mapping[str, Any]], segments: Sequence[str], metric: str, title: str
) -> None:
    # The object-oriented API renders PNGs with Agg whatever backend is configured, without
    # pyplot's global figure registry (nothing leaks in a long-lived worker).
    from matplotlib.figure import Figure

    methods = list(dict.fromkeys(str(row["method"]) for row in table))
    value = {(str(row["method"]), row["segment"]): _number(row.get(metric)) for row in table}
    width = 0.8 / max(len(methods), 1)
    figure = Figure(figsize=(max(6.0, 1.6 * len(segments) + 2), 4.0), dpi=100, layout="constrained")
    axes = figure.subplots()
    for i, method in enumerate(methods):
        heights = [value.get((method, segment), math.nan) for segment in segments]
        positions = [s + (i - (len(methods) - 1) / 2) * width for s in range(len(segments))]
        axes.bar(positions, heights, width=width, label=method)
    axes.set_xticks(range(len(segments)), list(segments))
    axes.set_ylabel(metric)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.savefig(path, format="png")


def write_report(
    out_dir: Path,
    *,
    title: str,
    model_version: str,
    summary: Mapping[str, str],
    table: Sequence[Mapping[str, Any]],
    segments: Sequence[str],
    k: int,
    sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write ``report.md``, ``ndcg_by_segment.png`` and ``recall_by_segment.png`` into ``out_dir``
    (created if missing) and return the path of ``report.md``.

    The page holds the title, the model version and ``summary`` as key/value lines, one table per
    segment (see :func:`format_table`; a segment without rows says so), the ``sections`` (heading,
    markdown body) and links to the charts,
    which group bars by segment with one bar per method.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {
        "ndcg_by_segment.png": (f"ndcg@{k}", f"NDCG@{k} by segment"),
        "recall_by_segment.png": (f"recall@{k}", f"Recall@{k} by segment"),
    }
    for name, (metric, chart_title) in charts.items():
        _bar_chart(out_dir / name, table, segments, metric, chart_title)

    lines = [f"# {title}", "", f"- **model version:** {model_version}"]
    lines += [f"- **{key}:** {value}" for key, value in summary.items()]
    for segment in segments:
        lines += ["", f"## Segment: {segment}", ""]
        if any(row.get("segment") == segment for row in table):
            lines.append(format_table(table, segment, k))
        else:
            lines.append("_No results for this segment._")
    comparisons = format_comparisons(table, segments)
    if comparisons:
        lines += ["", "## Differences to popularity (paired over the same users)", "", comparisons]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    lines += ["", "## Charts", ""]
    lines += [f"![{chart_title}]({name})" for name, (_, chart_title) in charts.items()]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
