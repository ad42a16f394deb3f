"""``placerec simulate-traffic``: the demo world's users against the serving API, clicking by their tastes.

Each request picks a user of the generated world (``<landing>/_truth``) by their activity, asks
``GET /recommendations`` and walks down the answer as the world's sessions do: a place at position
``p`` is viewed with :func:`placerec.demo.generator.view_p` and a view clicked with
:func:`~placerec.demo.generator.click_p` of the user's hidden utility for it; the views and clicks go back
through ``POST /feedback`` with the answer's request id. So a variant that ranks what users like higher
earns more clicks, and the loop (served → clicked → landed → ingested → CTR) runs on one machine.

Requests are queued open-loop at ``rate`` per second (each at its scheduled time, whatever the
earlier ones are doing) to ``concurrency`` workers with a connection each; the latency of a request is
from its send to its answer, and ``schedule_lag_s`` says if the simulator itself fell behind its rate.
Seeded: the same seed walks the same users and draws.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from placerec.model.oracle import Truth, load_truth


@dataclass
class TrafficResult:
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    impressions: int = 0
    views: int = 0
    clicks: int = 0
    feedback_errors: int = 0
    by_variant: dict[str, dict[str, int]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    schedule_lag_s: float = 0.0
    """How late the last request was queued (the simulator itself falling behind its rate)."""

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "feedback_errors": self.feedback_errors,
            "impressions": self.impressions,
            "views": self.views,
            "clicks": self.clicks,
            "by_variant": self.by_variant,
            "seconds": round(self.seconds, 2),
            "schedule_lag_s": round(self.schedule_lag_s, 3),
            "achieved_rps": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
        }


class World:
    """The hidden truth, as the simulator needs it: users by activity, each one's utility for a place."""

    def __init__(self, truth: Truth) -> None:
        self.truth = truth
        self.user_ids = sorted(truth.users)
        self.cum = list(accumulate(float(str(truth.users[u].get("activity") or 1.0)) for u in self.user_ids))

    def pick(self, rng: random.Random) -> str:
        return self.user_ids[bisect_right(self.cum, rng.random() * self.cum[-1])]

    def utility(self, user_id: str, place_id: str) -> float | None:
        from placerec.demo.generator import utility

        who, place = self.truth.users.get(user_id), self.truth.places.get(place_id)
        if who is None or place is None:
            return None
        categories: dict[str, float] = who["category_weights"]  # type: ignore[assignment]
        aspects: dict[str, float] = who["aspect_weights"]  # type: ignore[assignment]
        quality: dict[str, float] = place["quality"]  # type: ignore[assignment]
        fit = sum(w * quality.get(a, 0.0) for a, w in aspects.items())
        home = place["district"] == who["home_district"]
        return utility(categories.get(str(place["category"]), 0.0), home, fit, float(place["popularity"]))  # type: ignore[arg-type]


def reactions(world: World, user: str, items: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """The views and clicks ``user`` makes on a served list (the world's funnel)."""
    from placerec.demo.generator import click_p, view_p

    out = []
    for item in items:
        u = world.utility(user, str(item.get("place_id")))
        if u is None:
            continue
        pos = int(item["position"])
        if rng.random() >= view_p(u, pos):
            continue
        out.append({"event_type": "view", "user_id": user, "place_id": item["place_id"], "position": pos})
        if rng.random() < click_p(u):
            out.append({"event_type": "click", "user_id": user, "place_id": item["place_id"], "position": pos})
    return out


async def _one(client: Any, world: World, i: int, seed: int, k: int, result: TrafficResult) -> None:
    rng = random.Random(f"{seed}:{i}")  # noqa: S311 - a seeded simulation, not a secret
    user = world.pick(rng)
    began = time.perf_counter()
    try:
        response = await client.get("/recommendations", params={"user": user, "k": k})
    except Exception as exc:  # refused, reset, timed out: counted, never fatal
        result.requests += 1
        result.errors += 1
        result.error_kinds[type(exc).__name__] = result.error_kinds.get(type(exc).__name__, 0) + 1
        return
    result.latencies_ms.append((time.perf_counter() - began) * 1000)
    result.requests += 1
    if response.status_code != 200:
        result.errors += 1
        kind = f"HTTP {response.status_code}"
        result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
        return
    answer = response.json()
    items = answer.get("items", [])
    variant = str(answer.get("variant", ""))
    counts = result.by_variant.setdefault(variant, {"requests": 0, "impressions": 0, "clicks": 0})
    counts["requests"] += 1
    counts["impressions"] += len(items)
    result.impressions += len(items)
    result.request_ids.append(str(answer.get("request_id")))
    events = reactions(world, user, items, rng)
    if not events:
        return
    for e in events:
        e["request_id"] = answer["request_id"]
    clicks = sum(e["event_type"] == "click" for e in events)
    try:
        sent = await client.post("/feedback", json=events)
        ok = sent.status_code == 200
    except Exception:
        ok = False
    if not ok:
        result.feedback_errors += 1
        return
    result.views += len(events) - clicks
    result.clicks += clicks
    counts["clicks"] += clicks


async def _run(
    url: str, world: World, requests: int, rate: float, seed: int, k: int, concurrency: int
) -> TrafficResult:
    import httpx

    result = TrafficResult()
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def worker() -> None:
        # one connection per worker: httpx's pool scans all its connections per request, which made
        # a shared pool of 64 the bottleneck of the whole loop
        async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=1)) as client:
            while (i := await queue.get()) is not None:
                await _one(client, world, i, seed, k, result)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    began = time.perf_counter()
    for i in range(requests):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(i)
    result.schedule_lag_s = max(0.0, time.perf_counter() - (began + (requests - 1) / rate))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    result.seconds = time.perf_counter() - began
    return result


def simulate(
    url: str,
    truth_dir: Path,
    requests: int = 1000,
    rate: float = 50.0,
    seed: int = 7,
    k: int = 10,
    concurrency: int = 16,
) -> TrafficResult:
    """Play ``requests`` requests of the world in ``truth_dir`` against the API at ``url``."""
    truth = load_truth(truth_dir)
    if truth is None:
        raise FileNotFoundError(f"no generated world in {truth_dir} (users.jsonl, places.jsonl): run the demo first")
    if requests < 1 or not rate > 0 or concurrency < 1:
        raise ValueError("requests, rate and concurrency must be positive")
    return asyncio.run(_run(url.rstrip("/"), World(truth), requests, rate, seed, k, concurrency))
