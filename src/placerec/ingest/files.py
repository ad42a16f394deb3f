"""Which landing files an interval reads, and how Spark is shown them.

Every entry of ``<landing>/<feed>/dt=<day>/`` for the days of the interval gets exactly one rule, in
this order (the first that applies):

1. ``temp_file``: the name starts with ``.`` or ``_``, or ends with a temporary suffix
   (:data:`TEMP_SUFFIXES`): a shipper's in-flight file, renamed when complete;
2. ``symlink``: never followed (it may point outside the landing root, or at a file read anyway);
3. ``not_a_regular_file``: a folder, FIFO, socket or device (a FIFO would block the reader);
4. ``wrong_extension``: not ``*.jsonl``;
5. ``empty_file``: zero bytes;
6. ``unreadable``: it cannot be opened for reading (permissions, I/O error);
7. ``same_file``: another name (a hard link) of a file already taken;
8. otherwise it is **read**, whatever its name (commas, colons, spaces, Hangul, newlines).

Skipped files are recorded by the job (quarantine and run metrics): nothing is silent. Spark reads the
taken files through hard links with plain names in a staging folder (a symbolic link where a hard link
is refused), so no character in a landing name can reach Hadoop's path parser, and a file renamed or
deleted by its shipper mid-run still reads as it was listed (a hard link holds the inode).

Spark's text reader holds each line whole, so one line of gigabytes (a file with no newline) would take a
reader's memory with it. Staging scans every taken file in chunks; a file holding a line longer than
:data:`STAGE_LINE_LIMIT` is staged as a streamed copy instead, where each such line is one short
*placeholder* line: a marker with this process's random token, the line's size and its first bytes. Line
numbers stay as they were, and the job turns each placeholder into an ``oversized_record`` quarantine row
(:func:`from_placeholder`); a landing line cannot pass for one without the token.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from placerec.ingest.records import MAX_RECORD_BYTES, QUARANTINE_RECORD_CHARS

EXTENSION = ".jsonl"
TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".inprogress", ".crdownload", ".swp", "~")
FILE_SKIP_REASONS = (
    "temp_file",
    "symlink",
    "not_a_regular_file",
    "wrong_extension",
    "empty_file",
    "unreadable",
    "same_file",
)


@dataclass(frozen=True)
class LandingFile:
    """A file to read: where it is, and its name relative to the landing root (``source_file``)."""

    path: Path
    relative: str
    size: int


@dataclass(frozen=True)
class SkippedFile:
    """An entry not read, with its rule (:data:`FILE_SKIP_REASONS`) and a detail for people."""

    relative: str
    reason: str
    detail: str
    size: int = 0


@dataclass(frozen=True)
class Listing:
    """One feed's landing folder for an interval: the files to read and the entries skipped."""

    read: tuple[LandingFile, ...]
    skipped: tuple[SkippedFile, ...]


def _days(start: datetime, end: datetime) -> list[date]:
    day = start.astimezone(timezone.utc).date()
    last = (end - timedelta(microseconds=1)).astimezone(timezone.utc).date()
    out = []
    while day <= last:
        out.append(day)
        day += timedelta(days=1)
    return out


def _skip_reason(entry: Path, st: os.stat_result) -> tuple[str, str] | None:
    name = entry.name
    if name.startswith((".", "_")) or name.endswith(TEMP_SUFFIXES):
        return "temp_file", "hidden or temporary name: a file still being written"
    if stat.S_ISLNK(st.st_mode):
        return "symlink", f"symbolic link to {os.readlink(entry)!r:.200}: links are not followed"
    if not stat.S_ISREG(st.st_mode):
        kind = "folder" if stat.S_ISDIR(st.st_mode) else "FIFO, socket or device"
        return "not_a_regular_file", f"a {kind}: only regular files directly in the day's folder are read"
    if not name.endswith(EXTENSION):
        return "wrong_extension", f"only *{EXTENSION} files are read"
    if st.st_size == 0:
        return "empty_file", "zero bytes"
    try:
        os.close(os.open(entry, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as exc:
        return "unreadable", f"{exc.strerror or type(exc).__name__} (errno {exc.errno})"
    return None


def list_landing(root: Path, feed: str, start: datetime, end: datetime) -> Listing:
    """Apply the module's rules to ``<root>/<feed>/dt=<day>/`` for each day in ``[start, end)``."""
    read: list[LandingFile] = []
    skipped: list[SkippedFile] = []
    seen: dict[tuple[int, int], str] = {}
    for day in _days(start, end):
        folder = root / feed / f"dt={day.isoformat()}"
        try:
            entries = sorted(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:  # a day's folder that cannot be listed is reported, not passed over
            why = f"{exc.strerror} (errno {exc.errno})"
            skipped.append(SkippedFile(str(folder.relative_to(root)), "unreadable", why))
            continue
        for entry in entries:
            relative = str(entry.relative_to(root))
            try:
                st = entry.lstat()
            except OSError as exc:  # gone between the listing and the look
                skipped.append(SkippedFile(relative, "unreadable", f"{exc.strerror} (errno {exc.errno})"))
                continue
            rule = _skip_reason(entry, st)
            if rule is None and (st.st_dev, st.st_ino) in seen:
                rule = ("same_file", f"another name of {seen[(st.st_dev, st.st_ino)]!r:.200}, read once")
            if rule is not None:
                skipped.append(SkippedFile(relative, *rule, size=st.st_size))
                continue
            seen[(st.st_dev, st.st_ino)] = relative
            read.append(LandingFile(entry, relative, st.st_size))
    return Listing(tuple(read), tuple(skipped))


def stage(files: list[LandingFile], folder: Path) -> dict[str, str]:
    """Link each file into ``folder`` (emptied first) as ``<n>.jsonl``, or copy it with its over-long lines
    replaced by placeholders (module docstring); returns staged path → ``relative``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    staged: dict[str, str] = {}
    for n, f in enumerate(files):
        link = folder / f"{n:06d}{EXTENSION}"
        try:
            os.link(f.path, link)
        except OSError:  # another filesystem, or a file the user may not link (protected_hardlinks)
            link.symlink_to(f.path.resolve())
        if has_long_line(link, STAGE_LINE_LIMIT):  # read through the link: the bytes Spark would read
            copy = link.with_name(link.name + ".copy")
            copy_with_placeholders(link, copy, STAGE_LINE_LIMIT)
            os.replace(copy, link)
        staged[str(link)] = f.relative
    return staged


# Over-long lines. The validator refuses a line over MAX_RECORD_BYTES (oversized_record); staging lets
# lines up to one byte more through (a CR the validator strips), so both agree on every line.
STAGE_LINE_LIMIT = MAX_RECORD_BYTES + 1
"""Bytes (newline excluded) a staged line may have."""
PLACEHOLDER_PREFIX_BYTES = QUARANTINE_RECORD_CHARS * 4
"""Bytes of an over-long line kept in its placeholder: all quarantine shows of any line."""
_CHUNK = 4 * 1024 * 1024
_MARK = b"\x00placerec-oversized-line:" + secrets.token_hex(16).encode() + b":"


def placeholder_mark() -> bytes:
    """This process's placeholder marker (take it into a Spark function by value: a worker has its own)."""
    return _MARK


def from_placeholder(line: bytes, mark: bytes) -> tuple[int, bytes] | None:
    """``(size of the original line, its first bytes)`` if ``line`` is a placeholder made with ``mark``."""
    if not line.startswith(mark):
        return None
    size, _, prefix = line[len(mark) :].partition(b":")
    return int(size), bytes.fromhex(prefix.decode("ascii"))


def has_long_line(path: Path, limit: int) -> bool:
    """Whether any line of the file (newline excluded) is longer than ``limit`` bytes; reads it in chunks."""
    import numpy as np

    run = 0  # bytes of the line still open at the end of the last chunk
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            ends = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
            if ends.size == 0:
                run += len(chunk)
            else:
                if run + int(ends[0]) > limit or (ends.size > 1 and int(np.diff(ends).max()) - 1 > limit):
                    return True
                run = len(chunk) - int(ends[-1]) - 1
            if run > limit:
                return True
    return False


def copy_with_placeholders(source: Path, target: Path, limit: int) -> int:
    """Stream ``source`` to ``target``, each line over ``limit`` bytes replaced by its placeholder (memory:
    one chunk and ``limit`` bytes of a line); a missing final newline stays missing. Returns lines replaced."""
    replaced = 0
    line, size, last = bytearray(), 0, b""

    def finish(out: BinaryIO) -> None:
        nonlocal replaced
        if size > limit:
            replaced += 1
            shown = size - (last == b"\r")  # the size the validator gives: without a final CR
            out.write(_MARK + str(shown).encode() + b":" + bytes(line[:PLACEHOLDER_PREFIX_BYTES]).hex().encode())
        else:
            out.write(line)

    with source.open("rb") as f, target.open("wb") as out:
        while chunk := f.read(_CHUNK):
            at = 0
            while True:
                newline = chunk.find(b"\n", at)
                piece = chunk[at:] if newline < 0 else chunk[at:newline]
                if size <= limit:
                    line += piece[: limit + 1 - size]
                size += len(piece)
                last = piece[-1:] or last
                if newline < 0:
                    break
                finish(out)
                out.write(b"\n")
                line, size, last, at = bytearray(), 0, b"", newline + 1
        if size:
            finish(out)
    return replaced
