"""The placerec page: a FastAPI app the Airflow plugin (``plugins/placerec_plugin.py``) mounts on
the Airflow API server at ``/placerec``, behind Airflow's own authentication.

``/`` is the page (server-rendered HTML with inline SVG charts), ``/api/figures`` the same figures
as JSON, ``/runs/{dag_id}/{run_id}`` what each job recorded for one Airflow run (linked from every
train and publish run), ``/api/recommend?user=…`` the live answer for one user.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from html import escape
from typing import Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse

from placerec.ui import figures, svg

log = logging.getLogger(__name__)

URL_PREFIX = "/placerec"
MAX_USER_ID = 200
# the ops.task_metrics columns a run report shows besides its details
FIGURES = ("rows_read", "rows_written", "rows_quarantined", "calls", "cache_hits", "tokens", "cost", "seconds")

CSS = """
body{font-family:system-ui,sans-serif;margin:16px 24px;color:#222;max-width:1400px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4f6f8} td.t,th.t{text-align:left} .charts{display:flex;flex-wrap:wrap;gap:12px}
.note{color:#666;font-size:12px} .err{color:#b00020} .live{font-weight:bold;color:#2e7d32}
input{padding:4px} button{padding:4px 10px}
"""


def _table(headers: list[str], rows: list[list[Any]], text_cols: int = 1, cls: str = "") -> str:
    def cell(i: int, v: Any, tag: str) -> str:
        return f"<{tag}{' class=t' if i < text_cols else ''}>{escape('' if v is None else str(v))}</{tag}>"

    head = "".join(cell(i, h, "th") for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _panel(name: str, build: Callable[[], str]) -> str:
    """One panel; a failure (a service down, a table unreadable) shows in its place, not as a 500."""
    try:
        return build()
    except Exception as exc:  # a page of panels degrades one panel at a time
        log.exception("placerec page: panel %s failed", name)
        return f'<p class="err" id="err-{escape(name)}">{escape(name)} unavailable: {escape(type(exc).__name__)}</p>'


def _freshness_panel(items: list[figures.Freshness]) -> str:
    rows = [[f.table, f.rows, f.files, f.committed_at or "never", f.age_hours] for f in items]
    chart = svg.bars("Data files per table", [(f.table, f.files) for f in items], "files")
    return (
        _table(["table", "rows", "data files", "last commit (UTC)", "age (h)"], rows, 1, "freshness")
        + f'<div class="charts">{chart}</div>'
    )


def _ingest_panel(days: list[figures.IngestDay]) -> str:
    labels = [d.day for d in days]
    volume = svg.stacked_bars(
        "Rows per day",
        labels,
        {"written": [d.rows_written for d in days], "quarantined": [d.rows_quarantined for d in days]},
        "rows",
    )
    reasons = sorted({r for d in days for r in d.by_reason})
    rate = svg.stacked_bars(
        "Quarantine rate by reason",
        labels,
        {r: [d.by_reason.get(r, 0) / d.rows_read if d.rows_read else 0.0 for d in days] for r in reasons},
        "share of lines",
    )
    rows = [
        [d.day, d.rows_read, d.rows_written, d.rows_quarantined, f"{d.quarantine_rate:.2%}", d.run_id] for d in days
    ]
    headers = ["day", "lines read", "rows written", "quarantined", "rate", "run"]
    return f'<div class="charts">{volume}{rate}</div>' + _table(headers, rows, 1, "ingest")


def _llm_panel(runs: list[figures.LlmRun]) -> str:
    labels = [r.interval for r in runs]
    calls = svg.stacked_bars(
        "LLM requests and cache hits per run",
        labels,
        {"sent": [r.calls for r in runs], "cache hits": [r.cache_hits for r in runs]},
        "reviews",
    )
    token_budgets = [r.budget_tokens for r in runs if r.budget_tokens]
    cost_budgets = [r.budget_cost for r in runs if r.budget_cost]
    tokens = svg.bars(
        "Tokens per run", [(r.interval, r.tokens) for r in runs], "tokens", token_budgets[-1] if token_budgets else None
    )
    cost = svg.bars(
        "Cost per run", [(r.interval, r.cost) for r in runs], "USD", cost_budgets[-1] if cost_budgets else None
    )
    rows = [
        [
            r.interval,
            r.extractor,
            r.calls,
            r.cache_hits,
            r.tokens,
            f"{r.cost:.4f}",
            r.budget_tokens,
            r.budget_cost,
            r.run_id,
        ]
        for r in runs
    ]
    headers = [
        "interval",
        "extractor",
        "sent",
        "cache hits",
        "tokens",
        "cost (USD)",
        "token budget",
        "cost budget",
        "run",
    ]
    return f'<div class="charts">{calls}{tokens}{cost}</div>' + _table(headers, rows, 2, "llm")


def _model_panel(runs: list[figures.ModelRun]) -> str:
    charts = []
    for segment in figures.SEGMENTS:
        points: list[dict[str, object]] = []
        for r in runs:
            label = r.model_version.removeprefix("hybrid-")
            pop = r.ndcg.get("popularity", {}).get(segment)
            hyb = r.ndcg.get("hybrid", {}).get(segment)
            if pop is None or hyb is None:
                continue
            vs = r.versus_popularity.get(segment, {})
            lo, hi = (pop + vs["lo"], pop + vs["hi"]) if "lo" in vs and "hi" in vs else (None, None)
            points.append({"group": label, "series": "hybrid", "value": hyb, "lo": lo, "hi": hi})
            points.append({"group": label, "series": "popularity", "value": pop, "lo": None, "hi": None})
        if points:
            charts.append(svg.intervals(f"NDCG@10, {segment} users (hybrid: 95 % paired interval)", points))
    methods = sorted({m for r in runs for m in r.ndcg})
    rows = [
        [r.model_version, r.trained_for, "yes" if r.promoted else "no"]
        + [f"{r.ndcg.get(m, {}).get('all', float('nan')):.4f}" for m in methods]
        for r in reversed(runs)
    ]
    table = _table(["model version", "trained for", "promoted", *(f"{m} (all)" for m in methods)], rows, 2, "models")
    return f'<div class="charts">{"".join(charts) or svg.empty("NDCG@10")}</div>' + table


def _index_panel(versions: list[figures.IndexVersion], aliases: dict[str, list[str]]) -> str:
    alias_rows = [[a, ", ".join(i) or "(none)"] for a, i in sorted(aliases.items())]
    rows = [
        [v.version, v.family, v.index_name, v.model_version, v.docs, v.status, "live" if v.live else "", v.created_at]
        for v in versions
    ]
    headers = ["version", "family", "index", "model", "docs", "status", "alias", "created (UTC)"]
    return _table(["alias", "points at"], alias_rows, 2, "aliases") + _table(headers, rows, 4, "indices")


ONLINE_DAYS = 7


def _online_rows() -> list[Any]:
    """Online CTR per serving variant over the last :data:`ONLINE_DAYS` days (UTC, today included)."""
    from placerec.serve.online import ctr_by_variant, offline_runs, served_events, with_offline
    from placerec.serve.variants import parse_variants

    s = _settings()
    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    order = [v.name for v in parse_variants(s.serve_variants)]
    rows = ctr_by_variant(served_events(end - timedelta(days=ONLINE_DAYS), end, s), order)
    return with_offline(rows, offline_runs(s))


def _online_panel(rows: list[Any]) -> str:
    if not rows:
        return (
            "<p>No served impressions ingested in the last 7 days: run <code>placerec serve</code>, "
            "<code>placerec simulate-traffic</code>, then ingest (the <code>stream_events</code> DAG).</p>"
        )
    ref = rows[0].variant
    table_rows = [
        [
            r.variant,
            ", ".join(m for m in r.model_versions if m) or "-",
            "" if r.offline_ndcg is None else f"{r.offline_ndcg:.4f}",
            r.users,
            r.impressions,
            r.clicks,
            f"{r.ctr:.4f}",
            f"{r.low:.4f} .. {r.high:.4f}",
            "" if r.diff is None else f"{r.diff:+.4f} ({r.diff_low:+.4f} .. {r.diff_high:+.4f})",
        ]
        for r in rows
    ]
    headers = ["variant", "model", "offline ndcg@10", "users", "impressions", "clicks", "CTR", "95 % interval"]
    from placerec.serve.online import verdict

    table = _table([*headers, f"vs {ref}"], table_rows, 2, "online")
    return f'{table}<p class="note" id="online-verdict">{escape(verdict(rows))}</p>'


def _index_panel_for(catalog: Any) -> str:
    aliases = _aliases()
    return _index_panel(figures.index_versions(catalog, aliases), aliases)


def _preview_panel(user: str) -> str:
    form = (
        f'<form method="get" action="{URL_PREFIX}/"><label>user <input name="user" value="{escape(user)}" '
        f'maxlength="{MAX_USER_ID}"></label> <button type="submit">recommend</button></form>'
    )
    if not user:
        return form + '<p class="note">no user with a published list yet</p>'
    answer = _recommend(user)
    rows = [
        [i + 1, h.name, h.category, h.district, f"{h.score:.3f}", ", ".join(h.reasons)]
        for i, h in enumerate(answer.hits)
    ]
    note = f'<p class="note">source: {escape(answer.source)}; model {escape(answer.model_version or "-")}</p>'
    return form + note + _table(["#", "place", "category", "district", "score", "because"], rows, 0, "preview")


def _settings() -> Any:
    """Settings with the connections as Airflow keeps them: on the API server, Admin → Connections
    (its metadata database) and the secrets backends, then the environment."""
    from placerec.connections import from_airflow
    from placerec.settings import load_settings

    return load_settings(from_airflow)


def _recommend(user: str, k: int = 10) -> Any:
    from placerec.serve.client import opensearch_client
    from placerec.serve.query import recommend

    settings = _settings()
    return recommend(opensearch_client(settings), settings, user, k=k)


def _aliases() -> dict[str, list[str]]:
    from placerec.serve import indices
    from placerec.serve.client import opensearch_client
    from placerec.serve.publish import alias_targets

    settings = _settings()
    client = opensearch_client(settings)
    return {
        indices.alias_name(settings, f): alias_targets(client, indices.alias_name(settings, f))
        for f in indices.FAMILIES
    }


def _catalog() -> Any:
    from placerec.catalog import get_catalog

    return get_catalog()


def _page(body: str, title: str = "placerec") -> str:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
        f'<p class="note">read from the Iceberg tables and OpenSearch at {now}; '
        f'<a href="{URL_PREFIX}/api/figures">as JSON</a></p>{body}</body></html>'
    )


def render_page(user: str = "") -> str:
    """The whole page; each panel reads its own tables."""
    catalog = _catalog()
    user = user or _panel_value(lambda: figures.user_with_reasons(catalog), "")
    parts = [
        ("Table freshness", "freshness", lambda: _freshness_panel(figures.freshness(catalog))),
        ("Ingest: daily volume and quarantine", "ingest", lambda: _ingest_panel(figures.ingest_days(catalog))),
        ("Keyword extraction: LLM calls, cache, tokens and cost", "llm", lambda: _llm_panel(figures.llm_runs(catalog))),
        ("Model quality across runs", "models", lambda: _model_panel(figures.model_runs(catalog))),
        ("Index versions and aliases", "indices", lambda: _index_panel_for(catalog)),
        ("Online A/B: CTR per serving variant, last 7 days", "online", lambda: _online_panel(_online_rows())),
        ("Recommendation preview", "preview", lambda: _preview_panel(user)),
    ]
    body = "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{_panel(key, build)}</section>' for title, key, build in parts
    )
    return _page(body)


def _panel_value(get: Callable[[], Any], default: Any) -> Any:
    try:
        return get()
    except Exception:  # the page still renders without this figure
        log.exception("placerec page: a figure could not be read")
        return default


def render_run(dag_id: str, run_id: str) -> str:
    """What each job recorded for one Airflow run: the training report, the publish verdict, or the figures."""
    from placerec.report import format_publish, format_training

    rows = figures.run_report(_catalog(), run_id)
    parts = [f'<p><a href="{URL_PREFIX}/">placerec page</a> · DAG {escape(dag_id)} · run {escape(run_id)}</p>']
    if not rows:
        parts.append('<p class="note">no job recorded figures for this run (a dry run, or it has not finished)</p>')
    for r in rows:
        d = r["details"]
        if r["job"] == "train_hybrid" and d.get("table") is not None:
            text = format_training(d)
        elif r["job"] == "publish_index":
            text = format_publish(d)
        else:
            shown = {c: r[c] for c in FIGURES if r.get(c) is not None} | {"details": d}
            text = json.dumps(shown, indent=2, ensure_ascii=False, sort_keys=True, default=str)
        parts.append(
            f"<h2>{escape(r['job'])}: {escape(str(r['interval_start']))} .. {escape(str(r['interval_end']))}</h2>"
            f'<pre class="report">{escape(text)}</pre>'
        )
    return _page("".join(parts), f"placerec run report: {dag_id}")


def create_app(dependencies: list[Any] | None = None) -> FastAPI:
    """The app; ``dependencies`` guard every route (the plugin passes Airflow's ``requires_authenticated``)."""
    app = FastAPI(title="placerec", dependencies=dependencies or [], docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page(user: str = Query("", max_length=MAX_USER_ID)) -> str:
        return render_page(user.strip())

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run(dag_id: str, run_id: str) -> str:
        return render_run(dag_id, run_id)

    @app.get("/api/figures")
    def api_figures() -> dict[str, Any]:
        """The page's figures as JSON; a part that cannot be read is ``{"error": …}``, the rest still answer."""
        catalog = _catalog()
        aliases = _panel_value(_aliases, None)
        parts: dict[str, Callable[[], Any]] = {
            "freshness": lambda: figures.as_json(figures.freshness(catalog)),
            "ingest": lambda: figures.as_json(figures.ingest_days(catalog)),
            "llm": lambda: figures.as_json(figures.llm_runs(catalog)),
            "models": lambda: figures.as_json(figures.model_runs(catalog)),
            "indices": lambda: figures.as_json(figures.index_versions(catalog, aliases or {})),
            "online": lambda: [r.row() for r in _online_rows()],
        }
        out = {name: _panel_value(get, {"error": f"{name} unavailable"}) for name, get in parts.items()}
        out["aliases"] = aliases if aliases is not None else {"error": "OpenSearch unavailable"}
        return out

    @app.get("/api/recommend")
    def api_recommend(
        user: str = Query(..., min_length=1, max_length=MAX_USER_ID), k: int = Query(10, ge=1, le=100)
    ) -> dict[str, Any]:
        answer = _recommend(user, k)
        return {"user": user, **asdict(answer)}

    return app


def airflow_app() -> FastAPI:
    """The app as the Airflow API server mounts it: every route needs an authenticated Airflow user
    (the UI's session cookie or an API token), exactly like Airflow's own pages."""
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return create_app([Depends(requires_authenticated())])
