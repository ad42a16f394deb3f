"""Staging of over-long lines: a file holding a line too long to read whole is staged as a copy where each
such line is a placeholder (its size and first bytes), every other byte as it was, line for line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placerec.ingest import files
from placerec.ingest.files import copy_with_placeholders, from_placeholder, has_long_line, placeholder_mark

pytestmark = [pytest.mark.unit, pytest.mark.reliability]

LIMIT = 12

line = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"."))
text = st.tuples(st.lists(line, max_size=12), st.booleans())


def expected_lines(data: bytes) -> list[tuple[int, bytes] | bytes]:
    """What each line of the staged copy must be, worked out from the whole data at once."""
    out: list[tuple[int, bytes] | bytes] = []
    for piece in data.split(b"\n"):
        if len(piece) > LIMIT:
            out.append((len(piece) - piece.endswith(b"\r"), piece[: LIMIT + 1]))
        else:
            out.append(piece)
    return out


@settings(max_examples=400, deadline=None)
@given(text=text, chunk=st.integers(min_value=1, max_value=64))
def test_the_copy_keeps_every_line_and_replaces_only_the_long_ones(
    tmp_path_factory: pytest.TempPathFactory, text: tuple[list[bytes], bool], chunk: int
) -> None:
    lines, final_newline = text
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    folder = tmp_path_factory.mktemp("stage")
    source, target = folder / "in.jsonl", folder / "out.jsonl"
    source.write_bytes(data)
    saved = files._CHUNK
    files._CHUNK = chunk  # lines cut by chunk boundaries anywhere
    try:
        long = has_long_line(source, LIMIT)
        replaced = copy_with_placeholders(source, target, LIMIT)
    finally:
        files._CHUNK = saved
    want = expected_lines(data)
    assert long == any(isinstance(w, tuple) for w in want) == (replaced > 0)
    assert replaced == sum(isinstance(w, tuple) for w in want)
    got = [from_placeholder(g, placeholder_mark()) or g for g in target.read_bytes().split(b"\n")]
    assert got == want


def test_a_line_that_looks_like_a_placeholder_is_not_one(tmp_path: Path) -> None:
    forged = b"\x00placerec-oversized-line:" + b"0" * 32 + b":99:41"
    assert from_placeholder(forged, placeholder_mark()) is None
    assert from_placeholder(placeholder_mark() + b"7:41", placeholder_mark()) == (7, b"A")


CHILD = """
import resource, sys
from pathlib import Path
import numpy
from placerec.ingest import files
source, target = Path(sys.argv[1]), Path(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(files.has_long_line(source, files.STAGE_LINE_LIMIT))
print(files.copy_with_placeholders(source, target, files.STAGE_LINE_LIMIT))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_file_of_one_huge_line_is_staged_in_bounded_memory(tmp_path: Path) -> None:
    """64 MB without a newline, in a fresh process: the scan and the copy hold a chunk and the limit, never
    the line (peak resident memory grows by less than half of it)."""
    import subprocess
    import sys

    source, target = tmp_path / "one-line.jsonl", tmp_path / "staged.jsonl"
    with source.open("wb") as out:
        for _ in range(64):
            out.write(b"x" * (1024 * 1024))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(source), str(target)], capture_output=True, text=True, check=True
    )
    long, replaced, grown_mb = done.stdout.split()
    assert (long, replaced) == ("True", "1")
    assert float(grown_mb) < 32, grown_mb
    size, prefix = from_placeholder(target.read_bytes(), placeholder_mark_of(target)) or (0, b"")
    assert size == 64 * 1024 * 1024 and prefix == b"x" * files.PLACEHOLDER_PREFIX_BYTES


def placeholder_mark_of(staged: Path) -> bytes:
    """The marker another process wrote (its token is its own): everything up to the size field."""
    data = staged.read_bytes()
    head = b"\x00placerec-oversized-line:"
    return data[: data.index(b":", len(head)) + 1]
