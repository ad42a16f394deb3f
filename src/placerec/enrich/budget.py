"""What LLM calls cost, and a per-run budget that stops before it is exceeded.

Prices come from a table (USD per million tokens, prompt and completion) that settings can extend:
``PLACEREC_LLM_PRICES="my-model=0.2/0.8,other=1/4"``. A model missing from the table costs 0 and
says so in the run's metrics (``priced: false``) rather than guessing.

The budget reserves the worst case of a request (its estimated prompt tokens plus the completion
limit) before it is sent and settles to the real usage after, so concurrent requests can never spend
past the limit together.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

# USD per 1M tokens (prompt, completion); public list prices, checked 2026-11.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1": (2.00, 8.00),
}


def parse_prices(spec: str) -> dict[str, tuple[float, float]]:
    """``"model=in/out,model2=in/out"`` → ``{model: (in, out)}``; a clear ValueError on bad input."""
    prices: dict[str, tuple[float, float]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        model, sep, pair = item.partition("=")
        ins, slash, outs = pair.partition("/")
        try:
            if not (sep and slash and model.strip()):
                raise ValueError
            p_in, p_out = float(ins), float(outs)
            if p_in < 0 or p_out < 0:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"bad price {item!r}: expected model=<usd per 1M prompt>/<usd per 1M completion>"
            ) from None
        prices[model.strip()] = (p_in, p_out)
    return prices


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, tuple[float, float]]

    @classmethod
    def from_spec(cls, spec: str = "") -> PriceTable:
        return cls({**DEFAULT_PRICES, **parse_prices(spec)})

    def known(self, model: str) -> bool:
        return model in self.prices

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """USD for the tokens; 0 for a model the table does not know."""
        p_in, p_out = self.prices.get(model, (0.0, 0.0))
        return (tokens_in * p_in + tokens_out * p_out) / 1_000_000


class BudgetExhausted(Exception):
    """The next request would take the run past its budget."""


class Budget:
    """A token and/or cost ceiling shared by the threads of one extractor (None = no ceiling)."""

    def __init__(
        self, *, tokens: int | None = None, cost: float | None = None, model: str = "", prices: PriceTable
    ) -> None:
        if (tokens is not None and tokens < 0) or (cost is not None and cost < 0):
            raise ValueError("budget must not be negative")
        self.tokens, self.cost_limit = tokens, cost
        self.model, self.prices = model, prices
        self.spent_in = self.spent_out = 0
        self._reserved_in = self._reserved_out = 0
        self.exhausted = False
        self._lock = threading.Lock()

    @property
    def limited(self) -> bool:
        return self.tokens is not None or self.cost_limit is not None

    def _fits(self, t_in: int, t_out: int) -> bool:
        if self.tokens is not None and t_in + t_out > self.tokens:
            return False
        return self.cost_limit is None or self.prices.cost(self.model, t_in, t_out) <= self.cost_limit + 1e-12

    def reserve(self, tokens_in: int, tokens_out: int) -> None:
        """Hold the worst case of one request, or raise ``BudgetExhausted`` (and stay exhausted)."""
        with self._lock:
            t_in = self.spent_in + self._reserved_in + tokens_in
            t_out = self.spent_out + self._reserved_out + tokens_out
            if self.exhausted or not self._fits(t_in, t_out):
                self.exhausted = True
                raise BudgetExhausted(
                    f"budget_exhausted: the next request could take the run past its budget "
                    f"(tokens {self.tokens}, cost {self.cost_limit})"
                )
            self._reserved_in += tokens_in
            self._reserved_out += tokens_out

    def settle(self, reserved_in: int, reserved_out: int, used_in: int, used_out: int) -> None:
        """Replace a reservation by what the request really used."""
        with self._lock:
            self._reserved_in -= reserved_in
            self._reserved_out -= reserved_out
            self.spent_in += used_in
            self.spent_out += used_out

    @property
    def spent_cost(self) -> float:
        return self.prices.cost(self.model, self.spent_in, self.spent_out)
