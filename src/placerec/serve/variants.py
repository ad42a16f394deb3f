"""A/B variants of the serving API: what each serves, and which users get it.

``PLACEREC_SERVE_VARIANTS`` lists ``name=source:share`` entries, e.g. ``model=live:50,control=popular:50``:

- ``live``: the live aliases (the promoted, published model);
- ``popular``: the popularity fallback for everyone (a baseline);
- anything else: a publish version still kept (``placerec rollback`` lists them), served from its own
  indices (``<alias>-<version>``) beside the live one.

A user's variant is a stable hash of ``salt:user_id`` onto [0, 1) cut by the shares (normalised to
their sum), so a user keeps their variant across requests and servers, and a new salt reshuffles.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

LIVE, POPULAR = "live", "popular"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


@dataclass(frozen=True)
class Variant:
    name: str
    source: str
    share: float


def parse_variants(spec: str) -> list[Variant]:
    """The variants of ``spec`` (see the module docstring); a clear ValueError for anything else."""
    out: list[Variant] = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        name, eq, rest = entry.partition("=")
        source, colon, share_text = rest.rpartition(":")
        if not eq or not colon or not _NAME.match(name.strip()) or not source.strip():
            raise ValueError(f"serve variant {entry!r}: expected name=source:share (e.g. model=live:50)")
        try:
            share = float(share_text)
        except ValueError:
            raise ValueError(f"serve variant {entry!r}: share {share_text!r} is not a number") from None
        if not share > 0 or share != share or share == float("inf"):
            raise ValueError(f"serve variant {entry!r}: the share must be a positive number")
        out.append(Variant(name.strip(), source.strip(), share))
    if not out:
        raise ValueError("serve variants: none given (e.g. model=live:100)")
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ValueError(f"serve variants: a name appears twice in {names}")
    return out


def bucket(user_id: str, salt: str) -> float:
    """Where ``user_id`` falls on [0, 1): the first 8 bytes of sha256(salt:user_id)."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(user_id: str, variants: list[Variant], salt: str) -> Variant:
    """The variant ``user_id`` is served by (stable for a given salt and variant list)."""
    bounds = list(accumulate(v.share for v in variants))
    at = bucket(user_id, salt) * bounds[-1]
    return variants[min(bisect_right(bounds, at), len(variants) - 1)]
