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
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

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
    """Link each file into ``folder`` (emptied first) as ``<n>.jsonl``; returns staged path → ``relative``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    staged: dict[str, str] = {}
    for n, f in enumerate(files):
        link = folder / f"{n:06d}{EXTENSION}"
        try:
            os.link(f.path, link)
        except OSError:  # another filesystem, or a file the user may not link (protected_hardlinks)
            link.symlink_to(f.path.resolve())
        staged[str(link)] = f.relative
    return staged
