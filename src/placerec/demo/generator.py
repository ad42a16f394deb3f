"""A seeded generator of realistic Korean place data in the landing format.

World: places in Seoul districts with hidden per-aspect quality and Zipf-like popularity; users with
hidden tastes (categories, aspects they care about, a home district) and heavy-tailed activity.
Behaviour: sessions of (search →) impression → view → click → save/navigate → visit → review, each
step likelier when the place fits the user's tastes. Reviews are Korean sentences written from the
aspects' sentiment, with a consistent 1..5 rating. About ``malformed_rate`` of each feed's lines are
extra malformed records of every kind a real feed has, each with exactly one problem, listed in
``_truth/malformed.jsonl``.

Day ``dt`` holds what the shipper delivered that day; valid records' instants lie in
``[dt 00:00 UTC, dt+1 00:00 UTC)`` and are written in Korean time (``+09:00``).
Same arguments → byte-identical files.
"""

# ruff: noqa: S311  (a seeded simulation: reproducibility matters, not unpredictability)
from __future__ import annotations

import heapq
import logging
import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any

from placerec.demo import vocab as V
from placerec.demo.landing import (
    MAX_LINES_PER_FILE,
    TRUTH_DIR,
    clear_day,
    day_dir,
    dumps,
    part_name,
    split_parts,
    write_json,
    write_jsonl,
    write_lines,
)
from placerec.ingest.records import FEEDS

log = logging.getLogger(__name__)

SOURCE = "demo"
KST = timezone(timedelta(hours=9))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
NCAT = len(V.CATEGORIES)
CAT_INDEX = {c: i for i, c in enumerate(V.CATEGORIES)}
DEVICES = ("ios", "android", "web")

# Which malformation kinds each feed can carry.
FEED_REASONS: dict[str, tuple[str, ...]] = {
    "events": (
        "invalid_json",
        "missing_field",
        "invalid_type",
        "unknown_event_type",
        "invalid_timestamp",
        "out_of_interval",
        "duplicate_id",
        "invalid_value",
    ),
    "reviews": (
        "invalid_json",
        "missing_field",
        "invalid_type",
        "invalid_timestamp",
        "out_of_interval",
        "duplicate_id",
        "invalid_value",
        "oversized_text",
    ),
    "places": (
        "invalid_json",
        "missing_field",
        "invalid_type",
        "invalid_timestamp",
        "out_of_interval",
        "duplicate_id",
        "invalid_value",
    ),
}

# Local (KST) hour-of-day activity, weekday and weekend.
HOURS_WEEKDAY = (
    0.25,
    0.15,
    0.08,
    0.05,
    0.04,
    0.05,
    0.12,
    0.3,
    0.5,
    0.6,
    0.7,
    1.1,
    1.5,
    1.0,
    0.7,
    0.7,
    0.8,
    1.1,
    1.5,
    1.6,
    1.4,
    1.3,
    1.1,
    0.6,
)
HOURS_WEEKEND = (
    0.4,
    0.3,
    0.2,
    0.1,
    0.05,
    0.05,
    0.08,
    0.15,
    0.3,
    0.5,
    0.8,
    1.2,
    1.4,
    1.4,
    1.3,
    1.3,
    1.2,
    1.3,
    1.5,
    1.5,
    1.3,
    1.1,
    0.9,
    0.6,
)
WEEKEND_VOLUME = 1.15


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _iso(ms: int) -> str:
    """Epoch milliseconds → ISO-8601 in Korean time, e.g. ``2026-03-01T14:05:09.123+09:00``."""
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(KST).isoformat(timespec="milliseconds")


def _day_start_ms(dt: date) -> int:
    return int((datetime(dt.year, dt.month, dt.day, tzinfo=UTC) - EPOCH).total_seconds()) * 1000


def _hex(rng: random.Random, bits: int = 64) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def _stochastic_round(rng: random.Random, x: float) -> int:
    base = math.floor(x)
    return base + (1 if rng.random() < x - base else 0)


def _dirichlet(rng: random.Random, alphas: list[float]) -> list[float]:
    draws = [rng.gammavariate(a, 1.0) for a in alphas]
    total = sum(draws) or 1.0
    return [d / total for d in draws]


def _weighted_topk(rng: random.Random, items: list[Any], weights: list[float], k: int) -> list[Any]:
    """Weighted sampling of up to ``k`` distinct items (Efraimidis-Spirakis), in draw order."""
    rand, log = rng.random, math.log
    keyed = [(log(1.0 - rand()) / w, i) for i, w in enumerate(weights) if w > 0]
    keyed.sort(reverse=True)
    return [items[i] for _, i in keyed[:k]]


# --------------------------------------------------------------------------------------------- world


@dataclass
class Place:
    place_id: str
    name: str
    category: str
    district: str
    lat: float
    lon: float
    address: str
    quality: dict[str, float]
    price: int
    pop: float = 1.0
    born_day: int = 0

    def record(self, ts_ms: int) -> dict[str, Any]:
        return {
            "place_id": self.place_id,
            "name": self.name,
            "category": self.category,
            "district": self.district,
            "lat": self.lat,
            "lon": self.lon,
            "address": self.address,
            "updated_ts": _iso(ts_ms),
            "source": SOURCE,
        }

    def truth(self) -> dict[str, Any]:
        """The hidden part, as the world ends (``_truth/places.jsonl``)."""
        return {
            "place_id": self.place_id,
            "category": self.category,
            "district": self.district,
            "quality": {a: round(q, 4) for a, q in self.quality.items()},
            "popularity": round(self.pop, 6),
            "born_day": self.born_day,
        }


@dataclass
class User:
    user_id: str
    home: str
    cat_w: list[float]
    asp_w: list[float]
    activity: float
    weekend: float
    device: str
    review_p: float
    search_p: float
    rating_bias: float

    def truth(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "home_district": self.home,
            "category_weights": {c: round(w, 4) for c, w in zip(V.CATEGORIES, self.cat_w, strict=True)},
            "aspect_weights": {a: round(w, 4) for a, w in zip(V.ASPECTS, self.asp_w, strict=True)},
            "activity": round(self.activity, 4),
            "weekend_factor": round(self.weekend, 4),
            "device": self.device,
            "review_propensity": round(self.review_p, 4),
            "search_propensity": round(self.search_p, 4),
            "rating_bias": round(self.rating_bias, 4),
        }


def _nearby(name: str, k: int = 3) -> list[str]:
    me = V.DISTRICTS[name]
    dist = sorted(
        (math.hypot((d["lat"] - me["lat"]) * 111, (d["lon"] - me["lon"]) * 88), n)
        for n, d in V.DISTRICTS.items()
        if n != name
    )
    return [n for _, n in dist[:k]]


NEARBY = {n: _nearby(n) for n in V.DISTRICTS}
DISTRICT_NAMES = list(V.DISTRICTS)
DISTRICT_CUM = list(accumulate(V.DISTRICTS[d]["weight"] for d in DISTRICT_NAMES))


class World:
    """Places, users and the running state of the catalogue."""

    def __init__(self, seed: int, n_places: int, n_users: int) -> None:
        self.rng = random.Random(f"{seed}:world")
        self.used_names: set[str] = set()
        self.next_place = 1
        self.places: list[Place] = [self._new_place() for _ in range(n_places)]
        self._assign_popularity()
        self.users: list[User] = [self._new_user(i + 1) for i in range(n_users)]

    # places
    def _name(self, category: str, district: str, rng: random.Random | None = None) -> str:
        rng = rng or self.rng
        short = V.DISTRICTS[district]["short"]
        for attempt in range(12):
            pattern = rng.choice(V.NAME_PATTERNS[category])
            name = pattern.format(
                d=short, w=rng.choice(V.NAME_WORDS[category]), f=rng.choice(V.NAME_FOODS.get(category, ("",)))
            )
            if attempt >= 6:
                name = f"{name} {rng.choice(('본점', '2호점', '3호점', short + '점'))}"
            if name not in self.used_names:
                break
        else:
            name = f"{name} {self.next_place}호점"
        self.used_names.add(name)
        return " ".join(name.split())

    def _new_place(
        self,
        district: str | None = None,
        born_day: int = 0,
        rng: random.Random | None = None,
        place_id: str | None = None,
    ) -> Place:
        rng = rng or self.rng
        if district is None:
            district = DISTRICT_NAMES[bisect_right(DISTRICT_CUM, rng.random() * DISTRICT_CUM[-1])]
        info = V.DISTRICTS[district]
        cat_weights = [V.CATEGORY_SHARE[c] * info["cat"].get(c, 1.0) for c in V.CATEGORIES]
        category = rng.choices(V.CATEGORIES, weights=cat_weights)[0]
        price = min(
            4,
            max(
                1,
                V.CATEGORY_PRICE[category]
                + rng.choice((-1, 0, 0, 0, 1))
                + (1 if info["asp"].get("가격", 0) < -0.3 else 0),
            ),
        )
        quality = {}
        for a in V.ASPECTS:
            q = rng.gauss(0.0, 0.45) + info["asp"].get(a, 0.0) + V.CATEGORY_ASPECT[category].get(a, 0.0)
            if a == "가격":
                q -= 0.25 * (price - 2)
            quality[a] = max(-1.0, min(1.0, q))
        street = rng.choice(info["streets"])
        number = rng.randint(1, 180)
        address = f"서울 {info['gu']} {street} {number}"
        if rng.random() < 0.3:
            address += f"-{rng.randint(1, 30)}"
        if rng.random() < 0.4:
            address += f" {rng.choice(('1층', '2층', '3층', '지하 1층', '1층 101호'))}"
        place = Place(
            place_id=place_id or f"p{self.next_place:06d}",
            name=self._name(category, district, rng),
            category=category,
            district=district,
            lat=round(info["lat"] + rng.gauss(0, 0.0035), 6),
            lon=round(info["lon"] + rng.gauss(0, 0.0045), 6),
            address=address,
            quality=quality,
            price=price,
            born_day=born_day,
        )
        if place_id is None:
            self.next_place += 1
        return place

    def _assign_popularity(self) -> None:
        rng = self.rng
        latent = [
            (0.8 * p.quality["맛"] + 0.3 * p.quality["분위기"] + rng.gauss(0, 0.6), i)
            for i, p in enumerate(self.places)
        ]
        latent.sort(reverse=True)
        for rank, (_, i) in enumerate(latent):
            self.places[i].pop = 1.0 / (rank + 2) ** 0.9
        mean = sum(p.pop for p in self.places) / len(self.places)
        for p in self.places:
            p.pop /= mean

    def add_place(self, day: int) -> Place:
        place = self._new_place(born_day=day)
        ranks = sorted(p.pop for p in self.places)
        # a new place enters around the middle of the popularity curve, with some opening buzz
        place.pop = ranks[int(self.rng.uniform(0.3, 0.9) * (len(ranks) - 1))] * 2.0
        self.places.append(place)
        return place

    def change_place(self, place: Place) -> str:
        """Rename and/or re-categorise a place; return what changed."""
        rng = self.rng
        changed = ""
        if rng.random() < 0.5:
            place.category = rng.choice(V.CATEGORY_DRIFT[place.category])
            changed = "category"
            if rng.random() < 0.5:
                return changed
        self.used_names.discard(place.name)
        if rng.random() < 0.3 and not place.name.endswith("점") and f"{place.name} 본점" not in self.used_names:
            place.name = f"{place.name} 본점"
            self.used_names.add(place.name)
        else:
            place.name = self._name(place.category, place.district)
        return "category+name" if changed else "name"

    # users
    def _new_user(self, idx: int) -> User:
        rng = self.rng
        homes = DISTRICT_NAMES
        home = rng.choices(homes, weights=[V.HOME_WEIGHT.get(d, 0.6) for d in homes])[0]
        cat = _dirichlet(rng, [0.3 * V.CATEGORY_SHARE[c] * NCAT for c in V.CATEGORIES])
        cat_w = [0.85 * w + 0.15 * V.CATEGORY_SHARE[c] for w, c in zip(cat, V.CATEGORIES, strict=True)]
        asp = _dirichlet(rng, [0.4] * len(V.ASPECTS))
        asp_w = [0.85 * w + 0.15 / len(V.ASPECTS) for w in asp]
        activity = rng.lognormvariate(0.0, 1.2) * (5.0 if rng.random() < 0.02 else 1.0)
        return User(
            user_id=f"u{idx:06d}",
            home=home,
            cat_w=cat_w,
            asp_w=asp_w,
            activity=activity,
            weekend=rng.lognormvariate(0.0, 0.3),
            device=rng.choices(DEVICES, weights=(0.5, 0.42, 0.08))[0],
            review_p=rng.betavariate(2.0, 2.0),
            search_p=rng.betavariate(2.0, 2.5),
            rating_bias=rng.gauss(0.0, 0.3),
        )


# ----------------------------------------------------------------------------------------- reviews


def write_review(rng: random.Random, user: User, place: Place) -> tuple[str, int, list[dict[str, str]], str]:
    """Korean review text from aspects: (text, rating 1..5, aspects with sentiment, closer kind)."""
    k = rng.choices((1, 2, 3), weights=(0.35, 0.45, 0.2))[0]
    weights = [
        0.6 * w + 0.4 * (abs(place.quality[a]) + (0.5 if a == "맛" else 0.0)) / 1.5
        for a, w in zip(V.ASPECTS, user.asp_w, strict=True)
    ]
    aspects = _weighted_topk(rng, list(V.ASPECTS), weights, k)
    sentences, used = [], []
    signs = []
    for a in aspects:
        positive = place.quality[a] + 0.5 * user.rating_bias + rng.gauss(0.0, 0.35) > 0
        sentiment = "positive" if positive else "negative"
        sentence = rng.choice(V.TEMPLATES[a][sentiment]).format(menu=rng.choice(V.MENU[place.category]))
        sentences.append(sentence + rng.choice((".", ".", ".", "!", "~", "")))
        used.append({"aspect": a, "sentiment": sentiment, "sentence": sentence})
        signs.append(1.0 if positive else -1.0)
    score = sum(signs) / len(signs)
    low, high = (4, 5) if score == 1.0 else (1, 2) if score == -1.0 else (2, 4)
    rating = max(low, min(high, round(3 + 2 * score + 0.6 * user.rating_bias + rng.gauss(0.0, 0.35))))
    closer = ""
    if len(sentences) < 4 and rng.random() < 0.45:
        closer = "positive" if score > 0.3 else "negative" if score < -0.3 else "mixed"
        sentences.append(rng.choice(V.CLOSERS[closer]) + rng.choice((".", "!", "")))
    return " ".join(sentences), rating, used, closer


# ---------------------------------------------------------------------------------------- behaviour


@dataclass
class DayContext:
    day: int
    dt: date
    start_ms: int
    weekend: bool
    places: list[Place]
    by_district: dict[str, list[Place]]
    by_category: dict[str, list[Place]]
    global_cum: list[float]
    category_cum: dict[str, list[float]]
    district_cum: dict[str, list[float]]

    def draw(self, rng: random.Random, pool: str, key: str, k: int) -> list[Place]:
        """``k`` popularity-weighted draws (with replacement) from a district's or a category's places."""
        places = (self.by_district if pool == "d" else self.by_category).get(key)
        if not places:
            return []
        cum = (self.district_cum if pool == "d" else self.category_cum)[key]
        return rng.choices(places, cum_weights=cum, k=k)


@dataclass
class DayOutput:
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    reviews: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    review_truth: list[dict[str, Any]] = field(default_factory=list)


def _make_event(
    rng: random.Random,
    ms: int,
    etype: str,
    user: User,
    session: str,
    device: str,
    *,
    place: Place | None = None,
    query: str | None = None,
    review_id: str | None = None,
    rating: int | None = None,
    position: int | None = None,
) -> tuple[int, dict[str, Any]]:
    return ms, {
        "event_id": _hex(rng, 96),
        "event_type": etype,
        "ts": None,
        "user_id": user.user_id,
        "session_id": session,
        "place_id": place.place_id if place else None,
        "query": query,
        "review_id": review_id,
        "rating": rating,
        "position": position,
        "device": device,
        "source": SOURCE,
    }


def _query(rng: random.Random, user: User, ctx: DayContext) -> tuple[str, str | None, str, str | None]:
    """A Korean search query from the user's tastes: (query, district or None, category, aspect or None)."""
    category = rng.choices(V.CATEGORIES, weights=user.cat_w)[0] if rng.random() < 0.8 else rng.choice(V.CATEGORIES)
    r = rng.random()
    home_p = 0.35 if ctx.weekend else 0.55
    if r < home_p:
        district: str | None = user.home
    elif r < home_p + 0.15:
        district = rng.choice(NEARBY[user.home])
    elif r < 0.92:
        district = DISTRICT_NAMES[bisect_right(DISTRICT_CUM, rng.random() * DISTRICT_CUM[-1])]
    else:
        district = None
    aspect = rng.choices(V.ASPECTS, weights=user.asp_w)[0] if rng.random() < 0.6 else None
    cat_kw = rng.choice(V.QUERY_CATEGORY[category])
    d_kw = rng.choice(V.DISTRICTS[district]["alias"]) if district else ""
    if aspect:
        pre, post = rng.choice(V.QUERY_ASPECT_PRE[aspect]), rng.choice(V.QUERY_ASPECT_POST[aspect])
        form = rng.choice(("{d} {pre} {c}", "{d} {c} {post}", "{d} {c} 맛집 {post}", "{pre} {c} {d}"))
        if post == "맛집" and "맛집 {post}" in form:
            form = "{d} {c} {post}"  # not "파스타 맛집 맛집"
        text = form.format(d=d_kw, pre=pre, c=cat_kw, post=post)
    else:
        form = rng.choice(("{d} {c}", "{d} {c} 맛집", "{c} {d} 추천", "{d} {c} 추천"))
        text = form.format(d=d_kw, c=cat_kw)
    return " ".join(text.split()), district, category, aspect


def _search_results(
    rng: random.Random, ctx: DayContext, district: str | None, category: str, aspect: str | None, k: int
) -> list[Place]:
    cands: dict[str, tuple[Place, float]] = {}
    if district:
        near = NEARBY[district]
        for p in ctx.by_district.get(district, ()):
            cands[p.place_id] = (p, p.pop * (6.0 if p.category == category else 0.4))
        for d in near:
            for p in ctx.by_district.get(d, ()):
                if p.category == category:
                    cands[p.place_id] = (p, p.pop)
    for p in ctx.draw(rng, "c", category, 30):
        if p.place_id not in cands:
            cands[p.place_id] = (p, p.pop * (1.0 if district is None else 0.15))
    items = list(cands.values())
    weights = [w * (math.exp(1.5 * p.quality[aspect]) if aspect else 1.0) for p, w in items]
    return [p for p, _ in _weighted_topk(rng, items, weights, k)]


# how strongly a user's feed draws a place, times its popularity: from their home district, from
# their two favourite categories, from everywhere
FEED_HOME, FEED_CATEGORY, FEED_GLOBAL = 2.0, 0.8, 1.0
FEED_CATEGORIES = 2


def _feed_results(rng: random.Random, ctx: DayContext, user: User, k: int) -> list[Place]:
    cands: dict[str, tuple[Place, float]] = {}
    for p in ctx.draw(rng, "d", user.home, 25):
        cands[p.place_id] = (p, FEED_HOME * p.pop)
    top_cats = heapq.nlargest(FEED_CATEGORIES, range(NCAT), key=lambda i: user.cat_w[i])
    for i in top_cats:
        for p in ctx.draw(rng, "c", V.CATEGORIES[i], 15):
            if p.place_id not in cands:
                cands[p.place_id] = (p, FEED_CATEGORY * p.pop)
    for p in rng.choices(ctx.places, cum_weights=ctx.global_cum, k=20):
        if p.place_id not in cands:
            cands[p.place_id] = (p, FEED_GLOBAL * p.pop)
    items = list(cands.values())
    return [p for p, _ in _weighted_topk(rng, items, [w for _, w in items], k)]


def utility(category_weight: float, at_home: bool, fit: float, popularity: float) -> float:
    """How much a user wants a place (what choices are drawn by): their weight for its category (of
    ``NCAT`` categories), whether it is in their home district, the fit of its aspect qualities with
    the user's aspect weights, its popularity. The oracle reference ranks with it too."""
    return math.log(category_weight * NCAT + 0.15) + (0.4 if at_home else 0.0) + 1.2 * fit + 0.12 * math.log(popularity)


def view_p(u: float, position: int) -> float:
    """The chance a user views a place shown at ``position`` (1-based) given its utility ``u``."""
    return _sig(-1.0 + u - 0.07 * (position - 1))


def click_p(u: float) -> float:
    """The chance a view becomes a click (every later step of the funnel starts from a click)."""
    return _sig(-0.5 + 0.7 * u)


def expected_engagement(u: float, popularity: float, at_home: bool, favourite_category: bool) -> float:
    """How likely a user engages with a place, up to a per-user factor: how strongly their feed draws it
    (its popularity, more from their home district and favourite categories) times the chance that a
    place shown at the top is viewed and clicked. The oracle reference ranks with it."""
    draw = FEED_HOME if at_home else FEED_CATEGORY if favourite_category else FEED_GLOBAL
    return draw * popularity * view_p(u, 1) * click_p(u)


def _utility(user: User, place: Place) -> float:
    fit = sum(w * place.quality[a] for a, w in zip(V.ASPECTS, user.asp_w, strict=True))
    return utility(user.cat_w[CAT_INDEX[place.category]], place.district == user.home, fit, place.pop)


def _session(rng: random.Random, ctx: DayContext, user: User, t0: int, out: DayOutput) -> int:
    """Simulate one session starting at ``t0`` (ms); append to ``out``; return the number of events."""
    end = ctx.start_ms + DAY_MS
    session = "s" + _hex(rng, 64)
    device = user.device if rng.random() < 0.95 else rng.choice(DEVICES)
    events = out.events
    n0 = len(events)
    t = t0
    n_lists = 1
    while rng.random() < 0.4 and n_lists < 5:
        n_lists += 1
    for _ in range(n_lists):
        k = 20 if rng.random() < 0.3 else 10
        if rng.random() < user.search_p + (0.05 if ctx.weekend else 0.0):
            text, district, category, aspect = _query(rng, user, ctx)
            if t < end:
                events.append(_make_event(rng, t, "search", user, session, device, query=text))
            t += rng.randint(300, 2500)
            shown = _search_results(rng, ctx, district, category, aspect, k)
        else:
            shown = _feed_results(rng, ctx, user, k)
        if t >= end:
            break
        t_list = t
        for pos, place in enumerate(shown, start=1):
            events.append(
                _make_event(rng, t_list + pos * 40, "impression", user, session, device, place=place, position=pos)
            )
        t = t_list + len(shown) * 40
        for pos, place in enumerate(shown, start=1):
            u = _utility(user, place)
            if rng.random() >= view_p(u, pos):
                continue
            t += rng.randint(1_000, 30_000)
            if t >= end:
                break
            events.append(_make_event(rng, t, "view", user, session, device, place=place, position=pos))
            if rng.random() >= click_p(u):
                continue
            t += rng.randint(1_000, 10_000)
            if t >= end:
                break
            events.append(_make_event(rng, t, "click", user, session, device, place=place, position=pos))
            t += rng.randint(5_000, 120_000)
            saved = rng.random() < _sig(-2.0 + 0.6 * u)
            navigated = rng.random() < _sig(
                -1.7 + 0.5 * u + (0.4 if ctx.weekend else 0.0) + (0.3 if place.district == user.home else 0.0)
            )
            if saved and t < end:
                events.append(_make_event(rng, t, "save", user, session, device, place=place))
            if navigated and t < end:
                events.append(_make_event(rng, t + 2_000, "navigate", user, session, device, place=place))
            visit_p = (0.5 + (0.15 if ctx.weekend else 0.0)) if navigated else 0.06 if saved else 0.0
            if rng.random() < visit_p:
                tv = t + (rng.randint(10, 120) if navigated else rng.randint(60, 480)) * 60_000
                if tv < end:
                    visit_session = "s" + _hex(rng, 64)
                    events.append(_make_event(rng, tv, "visit", user, visit_session, device, place=place))
                    intensity = sum(abs(place.quality[a]) for a in V.ASPECTS) / len(V.ASPECTS)
                    if rng.random() < user.review_p * (0.8 + intensity):
                        tr = tv + rng.randint(30, 300) * 60_000
                        if tr < end:
                            _add_review(rng, user, place, tr, device, out)
        t += rng.randint(10_000, 90_000)
    return len(events) - n0


def _add_review(rng: random.Random, user: User, place: Place, ms: int, device: str, out: DayOutput) -> None:
    text, rating, aspects, closer = write_review(rng, user, place)
    review_id = "r" + _hex(rng, 64)
    out.events.append(
        _make_event(
            rng, ms, "review", user, "s" + _hex(rng, 64), device, place=place, review_id=review_id, rating=rating
        )
    )
    out.reviews.append(
        (
            ms,
            {
                "review_id": review_id,
                "place_id": place.place_id,
                "user_id": user.user_id,
                "rating": rating,
                "text": text,
                "ts": None,
                "source": SOURCE,
            },
        )
    )
    out.review_truth.append(
        {
            "review_id": review_id,
            "place_id": place.place_id,
            "user_id": user.user_id,
            "rating": rating,
            "aspects": aspects,
            "closer": closer or None,
        }
    )


def _simulate_day(
    rng: random.Random, ctx: DayContext, users: list[User], user_cum: list[float], target: int
) -> DayOutput:
    out = DayOutput()
    hours = HOURS_WEEKEND if ctx.weekend else HOURS_WEEKDAY
    # hour h (local) starts ((h - 9) mod 24) hours after 00:00 UTC
    hour_cum = list(accumulate(hours[(9 + i) % 24] for i in range(24)))
    total = 0
    while total < target:
        user = users[bisect_right(user_cum, rng.random() * user_cum[-1])]
        slot = bisect_right(hour_cum, rng.random() * hour_cum[-1])
        t0 = ctx.start_ms + slot * 3_600_000 + rng.randrange(3_600_000)
        total += _session(rng, ctx, user, t0, out)
    end = ctx.start_ms + DAY_MS
    out.events = [e for e in out.events if e[0] < end]  # list tails that ran past the day's end
    return out


# ---------------------------------------------------------------------------------------- malformed


class Malformer:
    """Fresh records broken in exactly one way, for one feed and day."""

    def __init__(self, rng: random.Random, ctx: DayContext, world: World) -> None:
        self.rng = rng
        self.ctx = ctx
        self.world = world
        self.next_place = 900_000 + 1_000 * ctx.day  # ids the world never reaches
        self.event_types: list[str] = []

    def _ms(self) -> int:
        return self.ctx.start_ms + self.rng.randrange(DAY_MS)

    def fresh_event(self, etype: str) -> dict[str, Any]:
        rng = self.rng
        user = rng.choice(self.world.users)
        place = rng.choice(self.ctx.places)
        kw: dict[str, Any] = {}
        if etype == "search":
            kw["query"] = _query(rng, user, self.ctx)[0]
        else:
            kw["place"] = place
        if etype == "review":
            kw["review_id"] = "r" + _hex(rng, 64)
            kw["rating"] = rng.randint(1, 5)
        if etype in ("impression", "view", "click"):
            kw["position"] = rng.randint(1, 20)
        ms, ev = _make_event(rng, self._ms(), etype, user, "s" + _hex(rng, 64), user.device, **kw)
        ev["ts"] = _iso(ms)
        return ev

    def fresh_review(self) -> dict[str, Any]:
        rng = self.rng
        user, place = rng.choice(self.world.users), rng.choice(self.ctx.places)
        text, rating, _, _ = write_review(rng, user, place)
        return {
            "review_id": "r" + _hex(rng, 64),
            "place_id": place.place_id,
            "user_id": user.user_id,
            "rating": rating,
            "text": text,
            "ts": _iso(self._ms()),
            "source": SOURCE,
        }

    def fresh_place(self) -> dict[str, Any]:
        # a place that is not part of the world, drawn with this malformer's own random state
        self.next_place += 1
        place = self.world._new_place(rng=self.rng, place_id=f"p{self.next_place:06d}")
        self.world.used_names.discard(place.name)
        return place.record(self._ms())

    def out_of_interval_ts(self) -> tuple[str, str]:
        rng, start, end = self.rng, self.ctx.start_ms, self.ctx.start_ms + DAY_MS
        kind = rng.choice(("hours_before", "hours_after", "days_before", "days_after", "kst_as_utc"))
        if kind == "hours_before":
            ms = start - rng.randint(1, 11 * 3600) * 1000
        elif kind == "hours_after":
            ms = end + rng.randint(0, 11 * 3600) * 1000
        elif kind == "days_before":
            ms = start - rng.randint(2, 30) * DAY_MS + rng.randrange(DAY_MS)
        elif kind == "days_after":
            ms = end + rng.randint(1, 10) * DAY_MS + rng.randrange(DAY_MS)
        else:  # local midnight..09:00 of the dt date: the previous UTC day
            ms = start - 9 * 3_600_000 + rng.randrange(9 * 3_600_000)
        return _iso(ms), kind

    def event(self, reason: str) -> tuple[dict[str, Any] | str, str, str | None]:
        """A malformed events line: (object or raw text, detail, its id or None)."""
        rng = self.rng
        etype = rng.choice(self.event_types) if self.event_types else "impression"  # the day's mix
        if reason == "unknown_event_type":
            etype = rng.choice(("view", "click", "save"))
        elif reason == "invalid_value":
            etype = "review" if rng.random() < 0.25 else "impression"
        ev = self.fresh_event(etype)
        if reason == "invalid_json":
            return _break_json(rng, dumps(ev)), "broken JSON text", ev["event_id"]
        if reason == "missing_field":
            fields = ["event_id", "event_type", "ts", "user_id"]
            fields += ["query"] if etype == "search" else ["place_id"]
            fields += ["review_id", "rating"] if etype == "review" else []
            name = rng.choice(fields)
            _drop(rng, ev, name)
            return ev, name, ev.get("event_id")
        if reason == "invalid_type":
            options = (
                ["user_id", "ts", "event_id"]
                + (["rating"] if etype == "review" else [])
                + (["position"] if ev["position"] is not None else [])
                + (["place_id"] if etype != "search" else [])
            )
            name = rng.choice(options)
            ev[name] = _wrong_type(rng, name, ev[name], self.ctx.start_ms)
            return ev, name, ev["event_id"] if isinstance(ev["event_id"], str) else None
        if reason == "unknown_event_type":
            ev["event_type"] = rng.choice(V.BAD_EVENT_TYPES)
            return ev, ev["event_type"], ev["event_id"]
        if reason == "invalid_timestamp":
            ev["ts"] = rng.choice(V.BAD_TIMESTAMPS)
            return ev, ev["ts"], ev["event_id"]
        if reason == "out_of_interval":
            ev["ts"], kind = self.out_of_interval_ts()
            return ev, kind, ev["event_id"]
        if reason == "invalid_value":
            if etype == "review":
                ev["rating"] = rng.choice((0, 7, 11, -1))
                return ev, f"rating={ev['rating']}", ev["event_id"]
            ev["position"] = rng.choice((-1, -3, -12))
            return ev, f"position={ev['position']}", ev["event_id"]
        raise ValueError(reason)

    def review(self, reason: str) -> tuple[dict[str, Any] | str, str, str | None]:
        rng = self.rng
        rv = self.fresh_review()
        if reason == "invalid_json":
            return _break_json(rng, dumps(rv)), "broken JSON text", rv["review_id"]
        if reason == "missing_field":
            name = rng.choice(("review_id", "place_id", "user_id", "text", "rating", "ts"))
            _drop(rng, rv, name)
            return rv, name, rv.get("review_id")
        if reason == "invalid_type":
            name = rng.choice(("rating", "rating", "user_id", "ts", "place_id"))
            rv[name] = _wrong_type(rng, name, rv[name], self.ctx.start_ms)
            return rv, name, rv["review_id"]
        if reason == "invalid_timestamp":
            rv["ts"] = rng.choice(V.BAD_TIMESTAMPS)
            return rv, rv["ts"], rv["review_id"]
        if reason == "out_of_interval":
            rv["ts"], kind = self.out_of_interval_ts()
            return rv, kind, rv["review_id"]
        if reason == "invalid_value":
            rv["rating"] = rng.choice((0, 7, 11, -1))
            return rv, f"rating={rv['rating']}", rv["review_id"]
        if reason == "oversized_text":
            target = rng.randint(10_000, 100_000)  # bytes of UTF-8 text
            base = rng.choice(V.SPAM) if rng.random() < 0.7 else rv["text"] + " "
            text = base * (target // len(base.encode("utf-8")) + 1)
            while len(text.encode("utf-8")) > target and len(text) > 2001:
                text = text[: max(2001, len(text) - 50)]
            rv["text"] = text
            return rv, f"{len(text)} chars, {len(text.encode('utf-8'))} bytes", rv["review_id"]
        raise ValueError(reason)

    def place(self, reason: str) -> tuple[dict[str, Any] | str, str, str | None]:
        rng = self.rng
        pl = self.fresh_place()
        if reason == "invalid_json":
            return _break_json(rng, dumps(pl)), "broken JSON text", pl["place_id"]
        if reason == "missing_field":
            name = rng.choice(("place_id", "name"))
            _drop(rng, pl, name)
            return pl, name, pl.get("place_id")
        if reason == "invalid_type":
            name = rng.choice(("lat", "lon", "place_id", "name"))
            if name in ("lat", "lon"):
                pl[name] = str(pl[name])
            else:
                pl[name] = rng.randint(10_000, 99_999)
            return pl, name, pl["place_id"] if isinstance(pl["place_id"], str) else None
        if reason == "invalid_timestamp":
            pl["updated_ts"] = rng.choice(V.BAD_TIMESTAMPS)
            return pl, pl["updated_ts"], pl["place_id"]
        if reason == "out_of_interval":
            pl["updated_ts"], kind = self.out_of_interval_ts()
            return pl, kind, pl["place_id"]
        if reason == "invalid_value":
            name = rng.choice(("lat", "lon"))
            if name == "lat":
                pl["lat"] = rng.choice((round(pl["lat"] * 10, 5), -91.5, 137.55))
            else:
                pl["lon"] = rng.choice((round(pl["lon"] * 10, 5), -190.0, 227.0))
            return pl, f"{name}={pl[name]}", pl["place_id"]
        raise ValueError(reason)


def _drop(rng: random.Random, obj: dict[str, Any], name: str) -> None:
    if rng.random() < 0.5:
        del obj[name]
    else:
        obj[name] = None


def _wrong_type(rng: random.Random, name: str, value: Any, start_ms: int) -> Any:
    if name == "rating":
        return rng.choice(("five", 4.5, str(value), "★★★★"))
    if name == "position":
        return str(value)
    if name == "ts":
        return (start_ms + rng.randrange(DAY_MS)) // 1000  # epoch seconds as a number
    if name == "user_id":
        return int(value.lstrip("u"))
    if name == "place_id":
        return int(value.lstrip("p"))
    return rng.getrandbits(48)  # ids as numbers


def _break_json(rng: random.Random, text: str) -> str:
    if rng.random() < 0.75:
        return text[: rng.randint(max(1, len(text) // 4), len(text) - 2)]  # truncated write
    first = text.find(',"')
    second = text.find(',"', first + 1)
    return text[:second] + text[second + 1 :]  # a missing comma between two fields


def _assemble(
    rng: random.Random, valid: list[str], extras: list[tuple[str, dict[str, Any], int | None, bool]], max_lines: int
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Interleave malformed lines with valid ones at random places.

    ``extras``: (line, truth, index of the original for a duplicate else None, whether the duplicate goes
    to a later part file). A duplicate always lands after its original. Returns all lines in order and
    (final index, truth) for each malformed line.
    """
    n = len(valid)
    total = n + len(extras)
    boundary = max_lines * n / total if total else 0.0  # about where the first part ends, in valid-line units
    keyed: list[tuple[float, int, str, dict[str, Any] | None]] = [(float(i), 0, s, None) for i, s in enumerate(valid)]
    for seq, (line, truth, orig, later_part) in enumerate(extras, start=1):
        if orig is None:
            pos = rng.uniform(-0.5, n - 0.5)
        elif later_part:
            pos = rng.uniform(max(orig + 0.1, boundary * 1.05), n - 0.5)
        else:
            pos = orig + rng.uniform(0.1, min(60.0, n - 0.5 - orig))
        keyed.append((pos, seq, line, truth))
    keyed.sort(key=lambda x: (x[0], x[1]))
    lines = [k[2] for k in keyed]
    marks = [(i, truth) for i, (_, _, _, truth) in enumerate(keyed) if truth is not None]
    return lines, marks


# -------------------------------------------------------------------------------------------- driver


def _day_targets(start: date, days: int, events: int) -> list[int]:
    w = [WEEKEND_VOLUME if (start + timedelta(d)).weekday() >= 5 else 1.0 for d in range(days)]
    s = sum(w)
    return [round(events * x / s) for x in w]


def generate(
    out: Path,
    start: date,
    days: int,
    seed: int,
    places: int = 1000,
    users: int = 5000,
    events: int = 200_000,
    malformed_rate: float = 0.01,
    *,
    max_lines_per_file: int = MAX_LINES_PER_FILE,
) -> dict[str, Any]:
    """Write ``days`` days of demo landing files from ``start`` under ``out``; return the manifest.

    Writes ``<out>/{events,reviews,places}/dt=YYYY-MM-DD/<feed>-NNNN.jsonl`` for those days (each day
    folder is removed first; other days are left alone) and ``<out>/_truth/`` (users, review aspects,
    malformed lines, manifest; rewritten). ``events`` is the total over all days, valid lines only.
    Deterministic: the same arguments give byte-identical files.
    """
    if days < 1 or places < 10 or users < 1 or events < 0 or not 0 <= malformed_rate < 0.5:
        raise ValueError("need days >= 1, places >= 10, users >= 1, events >= 0, 0 <= malformed_rate < 0.5")
    out = Path(out)
    world = World(seed, places, users)
    targets = _day_targets(start, days, events)
    reason_cycle: dict[str, list[str]] = {f: [] for f in FEEDS}
    cycle_rng = random.Random(f"{seed}:reasons")

    def next_reason(feed: str) -> str:
        if not reason_cycle[feed]:
            batch = list(FEED_REASONS[feed])
            cycle_rng.shuffle(batch)
            reason_cycle[feed] = batch
        return reason_cycle[feed].pop()

    malformed_truth: list[dict[str, Any]] = []
    review_truth: list[dict[str, Any]] = []
    counts: dict[str, dict[str, dict[str, Any]]] = {f: {} for f in FEEDS}
    catalogue_changes: dict[str, dict[str, int]] = {}
    for d in range(days):
        dt = start + timedelta(d)
        rng = random.Random(f"{seed}:day:{dt.isoformat()}")
        start_ms = _day_start_ms(dt)
        weekend = dt.weekday() >= 5

        # catalogue: everything on the first day, then a few changed and a few new places
        place_rows: list[tuple[int, dict[str, Any]]] = []
        if d == 0:
            for p in world.places:
                ms = start_ms + rng.randrange(2 * 3_600_000)
                place_rows.append((ms, p.record(ms)))
            catalogue_changes[dt.isoformat()] = {"full": len(world.places)}
        else:
            n0 = len(world.places)
            changed = rng.sample(world.places, min(n0, max(1, _stochastic_round(rng, 0.008 * n0))))
            kinds = {"name": 0, "category": 0, "category+name": 0}
            for p in changed:
                kinds[world.change_place(p)] += 1
            new = [world.add_place(d) for _ in range(max(1, _stochastic_round(rng, 0.004 * n0)))]
            for p in changed + new:
                ms = start_ms + rng.randrange(DAY_MS)
                place_rows.append((ms, p.record(ms)))
            catalogue_changes[dt.isoformat()] = {
                "renamed": kinds["name"],
                "recategorised": kinds["category"],
                "renamed_and_recategorised": kinds["category+name"],
                "new": len(new),
            }

        by_district: dict[str, list[Place]] = {}
        by_category: dict[str, list[Place]] = {}
        for p in world.places:
            by_district.setdefault(p.district, []).append(p)
            by_category.setdefault(p.category, []).append(p)

        def boosted(p: Place, d: int = d) -> float:
            return p.pop * (1.6 if p.born_day == d and d > 0 else 1.0)  # opening-day buzz

        ctx = DayContext(
            d,
            dt,
            start_ms,
            weekend,
            list(world.places),
            by_district,
            by_category,
            list(accumulate(boosted(p) for p in world.places)),
            {c: list(accumulate(boosted(p) for p in ps)) for c, ps in by_category.items()},
            {k: list(accumulate(boosted(p) for p in ps)) for k, ps in by_district.items()},
        )
        user_cum = list(accumulate(u.activity * (u.weekend if weekend else 1.0) for u in world.users))
        day = _simulate_day(rng, ctx, world.users, user_cum, targets[d])

        # valid lines, in delivery (time) order
        feeds_valid: dict[str, list[tuple[int, dict[str, Any]]]] = {
            "events": day.events,
            "reviews": day.reviews,
            "places": place_rows,
        }
        id_field = {"events": "event_id", "reviews": "review_id", "places": "place_id"}
        ts_field = {"events": "ts", "reviews": "ts", "places": "updated_ts"}
        for feed in FEEDS:
            rows = feeds_valid[feed]
            rows.sort(key=lambda r: (r[0], r[1][id_field[feed]]))
            for ms, obj in rows:
                obj[ts_field[feed]] = _iso(ms)
            valid = [dumps(obj) for _, obj in rows]

            mrng = random.Random(f"{seed}:malformed:{feed}:{dt.isoformat()}")
            malformer = Malformer(mrng, ctx, world)
            if feed == "events":
                malformer.event_types = [obj["event_type"] for _, obj in rows[:: max(1, len(rows) // 500)]]
            make = {"events": malformer.event, "reviews": malformer.review, "places": malformer.place}[feed]
            extras: list[tuple[str, dict[str, Any], int | None, bool]] = []
            n_bad = _stochastic_round(mrng, malformed_rate * len(valid))
            multi_part = len(valid) + n_bad > max_lines_per_file
            n_dups = 0
            for _ in range(n_bad):
                reason = next_reason(feed)
                if reason == "duplicate_id":
                    if not valid:
                        continue
                    n_dups += 1
                    later_part = multi_part and n_dups % 2 == 0  # every other re-delivery lands in a later part
                    first_part = int(0.8 * max_lines_per_file * len(valid) / (len(valid) + n_bad))
                    orig = mrng.randrange(first_part if later_part else len(valid))
                    extras.append(
                        (
                            valid[orig],
                            {"reason": reason, "detail": "re-delivered", "id": rows[orig][1][id_field[feed]]},
                            orig,
                            later_part,
                        )
                    )
                    continue
                bad, detail, rid = make(reason)
                line = bad if isinstance(bad, str) else dumps(bad)
                extras.append((line, {"reason": reason, "detail": detail, "id": rid}, None, False))
            lines, marks = _assemble(mrng, valid, extras, max_lines_per_file)

            folder = day_dir(out, feed, dt)
            clear_day(out, feed, dt)
            files, size = [], 0
            parts = split_parts(len(lines), max_lines_per_file)
            for part, (a, b) in enumerate(parts):
                path = folder / part_name(feed, part)
                size += write_lines(path, lines[a:b])
                files.append(path.relative_to(out).as_posix())
            for idx, truth in marks:
                part = idx // max_lines_per_file
                malformed_truth.append(
                    {"feed": feed, "file": files[part], "line": idx - part * max_lines_per_file + 1, **truth}
                )
            counts[feed][dt.isoformat()] = {
                "files": len(files),
                "bytes": size,
                "lines": len(lines),
                "valid": len(valid),
                "malformed": len(marks),
            }
        review_truth.extend(day.review_truth)
        log.info("demo %s: %d events, %d reviews, %d places", dt, len(day.events), len(day.reviews), len(place_rows))

    truth_dir = out / TRUTH_DIR
    write_jsonl(truth_dir / "users.jsonl", [u.truth() for u in world.users])
    write_jsonl(truth_dir / "places.jsonl", [p.truth() for p in world.places])
    write_jsonl(truth_dir / "review_aspects.jsonl", review_truth)
    write_jsonl(truth_dir / "malformed.jsonl", malformed_truth)
    by_reason: dict[str, dict[str, int]] = {f: {} for f in FEEDS}
    for m in malformed_truth:
        by_reason[m["feed"]][m["reason"]] = by_reason[m["feed"]].get(m["reason"], 0) + 1
    manifest = {
        "source": SOURCE,
        "format": "landing/v1",
        "interval": "UTC day [dt 00:00Z, dt+1 00:00Z); timestamps written in +09:00",
        "args": {
            "start": start.isoformat(),
            "days": days,
            "seed": seed,
            "places": places,
            "users": users,
            "events": events,
            "malformed_rate": malformed_rate,
            "max_lines_per_file": max_lines_per_file,
        },
        "days": [(start + timedelta(d)).isoformat() for d in range(days)],
        "counts": counts,
        "totals": {
            f: {k: sum(c[k] for c in counts[f].values()) for k in ("files", "bytes", "lines", "valid", "malformed")}
            for f in FEEDS
        },
        "malformed_by_reason": by_reason,
        "catalogue_changes": catalogue_changes,
        "places_total": len(world.places),
        "users_total": len(world.users),
    }
    write_json(truth_dir / "manifest.json", manifest)
    return manifest
