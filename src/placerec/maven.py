"""Download-once cache for Maven Central artifacts, verified by the repository's SHA-1 checksum."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from placerec.settings import Settings, get_settings

log = logging.getLogger(__name__)


class ChecksumError(RuntimeError):
    """A downloaded file does not match the checksum published next to it."""


@dataclass(frozen=True)
class MavenArtifact:
    group: str
    artifact: str
    version: str
    ext: str = "jar"

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.{self.ext}"

    def url(self, repo: str) -> str:
        return f"{repo.rstrip('/')}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.filename}"


def _sha1(path: Path) -> str:
    h = hashlib.sha1()  # noqa: S324 - Maven Central publishes SHA-1 sidecars; used for integrity, not security
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - fixed https repository URL
        return resp.read().decode().strip()


def fetch(artifact: MavenArtifact, settings: Settings | None = None) -> Path:
    """Return the cached file for ``artifact``, downloading and verifying it the first time."""
    settings = settings or get_settings()
    dest_dir = settings.cache_dir / "maven"
    dest = dest_dir / artifact.filename
    marker = dest.with_name(dest.name + ".sha1")
    if dest.is_file() and marker.is_file() and marker.read_text().strip() == _sha1(dest):
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    url = artifact.url(settings.maven_repo)
    expected = _fetch_text(url + ".sha1").split()[0].lower()
    log.info("downloading %s", url)
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".part-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=300) as resp:  # noqa: S310
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        actual = _sha1(tmp)
        if actual != expected:
            raise ChecksumError(f"{url}: sha1 {actual} != published {expected}")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    marker.write_text(expected + "\n")
    return dest


def spark_jars(settings: Settings | None = None) -> list[Path]:
    """Jars Spark needs for the Iceberg JDBC catalog: the Iceberg runtime and the SQLite driver."""
    settings = settings or get_settings()
    return [
        fetch(
            MavenArtifact(
                "org.apache.iceberg", f"iceberg-spark-runtime-{settings.spark_scala}", settings.iceberg_version
            ),
            settings,
        ),
        fetch(MavenArtifact("org.xerial", "sqlite-jdbc", settings.sqlite_jdbc_version), settings),
    ]
