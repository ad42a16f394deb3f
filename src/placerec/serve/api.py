"""``placerec serve``: the serving API (ASGI, FastAPI) over the live indices, logging what it shows.

``GET /recommendations?user=…&k=…[&district=…][&category=…]``: the user's variant (a stable hash of
the user id, :mod:`placerec.serve.variants`) answers from its indices (:func:`placerec.serve.query.recommend`:
the precomputed list, k-NN on search interests for cold users, the popular fallback). The answer has a
request id, the model version, the variant and each item's reasons; each item shown is logged as an
``impression`` event (user, place, position, request id, model version, variant) through
:class:`placerec.serve.eventlog.EventLog` into the landing area, where ingest (the daily batch and the
``stream_events`` micro-batches alike) takes it into ``raw.events``.

``POST /feedback``: one event or a list (``click``, ``view``, ``save``, ``navigate``, ``visit``), each
with ``user_id`` and ``place_id`` and, to tie it to what was shown, ``request_id`` (and ``position``);
checked with the ingest's own validation (:func:`placerec.ingest.records.validate_line`), so what the API
accepts ingest accepts too. An ``event_id`` the client sends is kept (a retried POST is one event after
ingest's de-duplication); otherwise one is made. Timestamps are the server's clock.

Errors are JSON ``{"error": …}``: 422 for bad input (with the reason), 503 when OpenSearch cannot answer
(the message names the failure, never a credential). Binds to what ``PLACEREC_SERVE_HOST`` says
(127.0.0.1); it has no authentication of its own: put it behind the gateway that has.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from placerec.serve.variants import LIVE, POPULAR, Variant, assign, parse_variants
from placerec.settings import Settings, get_settings

log = logging.getLogger(__name__)

SOURCE = "serve"
FEEDBACK_TYPES = ("view", "click", "save", "navigate", "visit")
MAX_K = 100
MAX_FEEDBACK = 500
FEEDBACK_FIELDS = {"event_id", "event_type", "user_id", "place_id", "request_id", "position", "session_id", "device"}


class BadRequest(Exception):
    pass


@dataclass
class Resolved:
    """What each variant serves right now: its publish version ('' = the live aliases) and model."""

    versions: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    at: float = 0.0


Answered = tuple[str, str, list[dict[str, Any]]]
"""An answer as served: its source (precomputed, interests, popular), model version and items."""


class Service:
    """The API's state: settings, variants, OpenSearch client, event log, resolved versions."""

    def __init__(self, settings: Settings) -> None:
        from placerec.serve.client import opensearch_client
        from placerec.serve.eventlog import EventLog

        self.s = settings
        self.variants = parse_variants(settings.serve_variants)
        self.client = opensearch_client(settings)
        self.log = EventLog(settings.landing_path, settings.serve_rotate_s)
        self.resolved = Resolved()
        self._cache: OrderedDict[tuple[Any, ...], Answered] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, name="serve-rotate", daemon=True)
        self._timer.start()

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.s.serve_rotate_s)):
            try:
                self.log.rotate()
            except OSError as exc:  # a full or vanished landing area: said, retried next tick
                log.error("sealing the impression log failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._timer.join(timeout=5)
        self.log.close()

    def resolve(self) -> Resolved:
        """Each variant's publish version and model version (refreshed every ``serve_refresh_s``)."""
        with self._lock:
            if time.monotonic() - self.resolved.at < self.s.serve_refresh_s and self.resolved.at:
                return self.resolved
            from placerec.serve.publish import live_version, recorded

            live = live_version(self.client, self.s) or ""
            try:
                models = {r["version"]: str(r.get("model_version") or "") for r in recorded(self.s)}
            except Exception as exc:  # the catalog unreadable: answers still go out, without a model name
                log.warning("ops.index_versions unreadable (%s): model versions unknown", type(exc).__name__)
                models = {}
            versions = {v.name: (live if v.source in (LIVE, POPULAR) else v.source) for v in self.variants}
            named = {
                v.name: "popularity" if v.source == POPULAR else models.get(versions[v.name], "") for v in self.variants
            }
            self.resolved = Resolved(versions, named, time.monotonic())
            return self.resolved

    def _key(self, resolved: Resolved, variant: Variant, *query: Any) -> tuple[Any, ...]:
        return (resolved.versions[variant.name], variant.source == POPULAR, *query)

    def cached(self, variant: Variant, user: str, k: int, district: str, category: str) -> Answered | None:
        """The cached answer, without blocking: None when there is none or the versions are due a
        lookup (then :meth:`answer`, in a worker thread)."""
        resolved = self.resolved
        if not resolved.at or time.monotonic() - resolved.at >= self.s.serve_refresh_s:
            return None
        with self._cache_lock:
            return self._cache.get(self._key(resolved, variant, user, k, district, category))

    def answer(self, variant: Variant, user: str, k: int, district: str, category: str) -> Answered:
        """``(source, model version, items)`` for ``user`` from ``variant``'s version. A published
        version's indices never change, so answers are cached per version (up to
        ``serve_cache_entries``; a new live version is a new key)."""
        from placerec.serve.query import recommend

        resolved = self.resolve()
        key = self._key(resolved, variant, user, k, district, category)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        version = resolved.versions[variant.name]
        answer = recommend(
            self.client, self.s, user, k, district, category, version=version, popular_only=variant.source == POPULAR
        )
        items = [
            {
                "position": pos,
                "place_id": h.place_id,
                "name": h.name,
                "category": h.category,
                "district": h.district,
                "score": round(h.score, 6),
                "reasons": h.reasons,
            }
            for pos, h in enumerate(answer.hits, start=1)
        ]
        found = (answer.source, answer.model_version or resolved.models.get(variant.name, ""), items)
        with self._cache_lock:
            self._cache[key] = found
            while len(self._cache) > self.s.serve_cache_entries:
                self._cache.popitem(last=False)
        return found

    def variant_of(self, user: str) -> Variant:
        return assign(user, self.variants, self.s.serve_salt)

    def recommend(self, user: str, k: int, district: str, category: str) -> dict[str, Any]:
        variant = self.variant_of(user)
        return self.served(variant, user, self.answer(variant, user, k, district, category))

    def served(self, variant: Variant, user: str, found: Answered) -> dict[str, Any]:
        """The response for ``found``, its impressions logged first."""
        source, model, items = found
        request_id = uuid.uuid4().hex
        now = datetime.now(timezone.utc)
        self.log.write(
            (
                {
                    "event_id": f"{request_id}-{it['position']}",
                    "event_type": "impression",
                    "ts": now,
                    "user_id": user,
                    "session_id": request_id,
                    "place_id": it["place_id"],
                    "position": it["position"],
                    "device": "api",
                    "source": SOURCE,
                    "request_id": request_id,
                    "model_version": model or None,
                    "variant": variant.name,
                }
                for it in items
            ),
            now,
        )
        return {
            "request_id": request_id,
            "user": user,
            "variant": variant.name,
            "model_version": model,
            "source": source,
            "items": items,
        }

    def feedback(self, body: Any) -> dict[str, Any]:
        from placerec.ingest.records import validate_line

        events = body if isinstance(body, list) else [body]
        if not events or len(events) > MAX_FEEDBACK:
            raise BadRequest(f"send 1 to {MAX_FEEDBACK} events, got {len(events)}")
        now = datetime.now(timezone.utc)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        records = []
        for n, event in enumerate(events):
            if not isinstance(event, dict):
                raise BadRequest(f"event {n}: expected an object, got {type(event).__name__}")
            unknown = sorted(set(event) - FEEDBACK_FIELDS)
            if unknown:
                raise BadRequest(f"event {n}: unknown fields {unknown[:5]}")
            if event.get("event_type") not in FEEDBACK_TYPES:
                raise BadRequest(f"event {n}: event_type must be one of {', '.join(FEEDBACK_TYPES)}")
            record = {
                "event_id": uuid.uuid4().hex,
                **event,
                "ts": now.isoformat(),
                "source": SOURCE,
                "device": event.get("device") or "api",
            }
            verdict = validate_line("events", json.dumps(record).encode(), day, day + timedelta(days=1))
            if verdict.values is None:
                raise BadRequest(f"event {n}: {verdict.reason}: {verdict.detail}")
            records.append(record)
        self.log.write(records, now)
        return {"accepted": len(records), "event_ids": [r["event_id"] for r in records]}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app (``uvicorn placerec.serve.api:app`` or ``placerec serve``)."""
    from opensearchpy.exceptions import OpenSearchException

    s = settings or get_settings()
    state: dict[str, Service] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["service"] = Service(s)
        try:
            yield
        finally:
            state.pop("service").close()

    app = FastAPI(title="placerec serving API", lifespan=lifespan)

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def bad_query(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:])}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(OpenSearchException)
    async def search_down(_: Request, exc: OpenSearchException) -> JSONResponse:
        log.error("OpenSearch: %s", type(exc).__name__)
        return JSONResponse({"error": f"the index cannot answer ({type(exc).__name__})"}, status_code=503)

    @app.get("/health")
    def health() -> dict[str, Any]:
        service = state["service"]
        resolved = service.resolve()
        return {
            "status": "ok",
            "variants": [
                {"name": v.name, "source": v.source, "share": v.share, "model_version": resolved.models.get(v.name, "")}
                for v in service.variants
            ],
            "logged": service.log.written,
        }

    @app.get("/recommendations")
    async def recommendations(
        user: str = Query(min_length=1, max_length=128),
        k: int = Query(10, ge=1, le=MAX_K),
        district: str = Query("", max_length=128),
        category: str = Query("", max_length=128),
    ) -> dict[str, Any]:
        # a cached answer is served on the event loop; a lookup goes to a worker thread
        service = state["service"]
        variant = service.variant_of(user)
        found = service.cached(variant, user, k, district, category)
        if found is None:
            found = await run_in_threadpool(service.answer, variant, user, k, district, category)
        return service.served(variant, user, found)

    @app.post("/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON: {type(exc).__name__}") from None
        return state["service"].feedback(body)

    return app
