"""Small inline SVG charts: no JavaScript, no assets, readable in any browser and in a test.

Every mark carries its figure in ``data-label`` / ``data-value`` (and a ``<title>`` tooltip), so a
browser test can read what a chart shows and compare it with the tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 640, 220  # HEIGHT: the plot and its axis; x labels and the legend go below it
LABEL_SPACE = 30  # room for the rotated x labels (cut to MAX_LABEL characters)
MAX_LABEL = 18
LEGEND_ROW = 14
PAD_L, PAD_R, PAD_T, PAD_B = 56, 12, 28, 44
PALETTE = ("#017cee", "#e5742d", "#2e9e5b", "#b54ac7", "#c9a400", "#6c7a89", "#d0342c", "#00a3a3")


def _drawn(v: float) -> float:
    """What a mark's size may use: a negative, NaN or infinite figure draws as nothing (its
    ``data-value`` and tooltip still say what it is)."""
    return v if math.isfinite(v) and v > 0 else 0.0


def _num(v: float) -> str:
    return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"


def _frame(title: str, body: list[str], top: float, unit: str, height: int = HEIGHT) -> str:
    """The chart's box: title, y axis from 0 to ``top`` with three grid lines, then ``body``."""
    plot_h = HEIGHT - PAD_T - PAD_B  # a legend adds height below the plot, not to it
    grid = []
    for i in range(4):
        y = PAD_T + plot_h * (1 - i / 3)
        grid.append(
            f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{_num(top * i / 3)}</text>'
        )
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">'
        f'<text x="{PAD_L}" y="16" font-size="12" font-weight="bold">{escape(title)}'
        f"{escape(f' ({unit})') if unit else ''}</text>" + "".join(grid) + "".join(body) + "</svg>"
    )


def _x_label(x: float, label: str) -> str:
    shown = label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"
    y = HEIGHT - PAD_B + 14
    return (
        f'<text x="{x:.1f}" y="{y}" font-size="10" text-anchor="end" '
        f'transform="rotate(-30 {x:.1f} {y})">{escape(shown)}</text>'
    )


def _legend(names: Sequence[str]) -> tuple[str, int]:
    """The legend below the x labels, wrapped into rows; returns it and the chart's total height."""
    out, x, row = [], PAD_L, 0
    for i, name in enumerate(names):
        width = 16 + 6 * len(name)
        if x + width > WIDTH - PAD_R and x > PAD_L:
            x, row = PAD_L, row + 1
        y = HEIGHT + LABEL_SPACE + row * LEGEND_ROW
        out.append(
            f'<rect x="{x}" y="{y - 8}" width="9" height="9" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{x + 12}" y="{y}" font-size="10">{escape(name)}</text>'
        )
        x += width
    return "".join(out), HEIGHT + LABEL_SPACE + (row + 1) * LEGEND_ROW


def stacked_bars(
    title: str,
    labels: Sequence[str],
    stacks: Mapping[str, Sequence[float]],
    unit: str = "",
    limit: float | None = None,
) -> str:
    """One bar per label, split by series (e.g. rows per day, stacked by quarantine reason);
    ``limit`` draws a dashed line across (a budget, a threshold)."""
    if not labels:
        return empty(title)
    names = list(stacks)
    totals = [sum(_drawn(float(stacks[n][i])) for n in names) for i in range(len(labels))]
    top = max([*totals, _drawn(limit or 0.0)]) * 1.1 or 1.0  # nothing but zeros: an axis to 1
    height = HEIGHT + LABEL_SPACE
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    step = plot_w / len(labels)
    body = []
    for i, label in enumerate(labels):
        x, base = PAD_L + i * step + step * 0.15, 0.0
        for j, name in enumerate(names):
            v = float(stacks[name][i])
            h = plot_h * _drawn(v) / top
            y = PAD_T + plot_h * (1 - (base + _drawn(v)) / top)
            body.append(
                f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[j % len(PALETTE)]}" data-label="{escape(label)}" data-series="{escape(name)}" '
                f'data-value="{v:g}"><title>{escape(label)} {escape(name)}: {_num(v)}</title></rect>'
            )
            base += _drawn(v)
        body.append(_x_label(PAD_L + i * step + step * 0.5, label))
    if limit is not None:
        y = PAD_T + plot_h * (1 - _drawn(limit) / top)
        body.append(
            f'<line class="limit" x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0342c" '
            f'stroke-dasharray="5 3" data-value="{limit:g}"><title>limit {_num(limit)}</title></line>'
        )
    if len(names) > 1:
        legend, height = _legend(names)
        body.append(legend)
    return _frame(title, body, top, unit, height)


def bars(title: str, points: Sequence[tuple[str, float]], unit: str = "", limit: float | None = None) -> str:
    """One bar per (label, value)."""
    return stacked_bars(title, [p[0] for p in points], {title: [p[1] for p in points]}, unit, limit)


def intervals(title: str, rows: Sequence[Mapping[str, object]], unit: str = "") -> str:
    """Points with 95 % intervals, grouped by ``group`` (e.g. a segment), one colour per ``series``.

    ``rows``: ``{"group", "series", "value", "lo", "hi"}`` (``lo``/``hi`` may be None).
    """
    if not rows:
        return empty(title)
    groups = list(dict.fromkeys(str(r["group"]) for r in rows))
    series = list(dict.fromkeys(str(r["series"]) for r in rows))
    top = max(_drawn(float(r["hi"] if r.get("hi") is not None else r["value"])) for r in rows) * 1.15 or 1.0  # type: ignore[arg-type]
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    step = plot_w / len(groups)
    body = []
    for gi, group in enumerate(groups):
        mine = [r for r in rows if str(r["group"]) == group]
        for r in mine:
            si = series.index(str(r["series"]))
            x = PAD_L + gi * step + step * (si + 1) / (len(series) + 1)
            colour = PALETTE[si % len(PALETTE)]
            v = float(r["value"])  # type: ignore[arg-type]

            def y(value: float) -> float:
                return PAD_T + plot_h * (1 - min(_drawn(value), top) / top)

            if r.get("lo") is not None and r.get("hi") is not None:
                body.append(
                    f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(float(r["lo"])):.1f}" '  # type: ignore[arg-type]
                    f'y2="{y(float(r["hi"])):.1f}" stroke="{colour}" stroke-width="2"/>'  # type: ignore[arg-type]
                )
            body.append(
                f'<circle class="mark" cx="{x:.1f}" cy="{y(v):.1f}" r="4" fill="{colour}" '
                f'data-label="{escape(group)}" data-series="{escape(str(r["series"]))}" data-value="{v:g}">'
                f"<title>{escape(group)} {escape(str(r['series']))}: {_num(v)}</title></circle>"
            )
        body.append(_x_label(PAD_L + gi * step + step * 0.6, group))
    legend, height = _legend(series)
    body.append(legend)
    return _frame(title, body, top, unit, height)


def empty(title: str) -> str:
    """A chart with nothing to show yet says so."""
    return (
        f'<svg class="chart empty" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} 60" '
        f'width="{WIDTH}" height="60" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">'
        f'<text x="{PAD_L}" y="16" font-size="12" font-weight="bold">{escape(title)}</text>'
        f'<text x="{PAD_L}" y="40" font-size="11" fill="#777">no runs yet</text></svg>'
    )
