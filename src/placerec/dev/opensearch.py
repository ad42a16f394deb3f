"""Single-node OpenSearch with the k-NN plugin, assembled from Maven Central artifacts.

Why the assembly: Maven Central carries OpenSearch only as the minimal *integ-test* distribution
(no modules besides transport-netty4). k-NN extends ``lang-painless``, so we rebuild that module from
its published jars. The node runs as a dedicated system user because OpenSearch refuses to run as root.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from placerec.dev import process
from placerec.dev.httpjson import ProbeError, request_json
from placerec.dev.process import LaunchSpec
from placerec.maven import MavenArtifact, fetch
from placerec.settings import Settings

log = logging.getLogger(__name__)

SERVICE_USER = "placerec-os"
"""System user the node runs as when we are root."""

LAYOUT_VERSION = "3"
"""Bump when the assembled layout changes, so existing installs are rebuilt."""

# Dependencies of lang-painless, pinned by its POM for OpenSearch 2.19.x
# (https://repo1.maven.org/maven2/org/opensearch/plugin/lang-painless/2.19.1/lang-painless-2.19.1.pom).
ANTLR_VERSION = "4.13.1"
ASM_VERSION = "9.7"
ASM_ARTIFACTS = ("asm", "asm-util", "asm-tree", "asm-commons", "asm-analysis")

# vm.max_map_count below this makes mmap-based stores fragile; OpenSearch only warns on loopback.
MIN_MAP_COUNT = 262144


def state_dir(settings: Settings) -> Path:
    """Root of everything OpenSearch-related under the placerec home."""
    return settings.home / "opensearch"


def install_dir(settings: Settings) -> Path:
    """The assembled distribution (read-only for the service user)."""
    return state_dir(settings) / "dist" / f"opensearch-{settings.opensearch_version}"


def http_port(settings: Settings) -> int:
    """Port of ``settings.opensearch_url``."""
    return urlsplit(settings.opensearch_url).port or 9200


def java_home() -> Path:
    """JDK for OpenSearch: $OPENSEARCH_JAVA_HOME / $JAVA_HOME if usable, else the ``java`` on PATH."""
    for var in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        value = os.environ.get(var)
        if value and (Path(value) / "bin" / "java").is_file():
            return Path(value)
    java = shutil.which("java")
    if not java:
        raise RuntimeError("java not found on PATH; OpenSearch needs a JDK 11+ (17 recommended)")
    return Path(java).resolve().parent.parent  # <jdk>/bin/java -> <jdk>


def distribution_artifacts(settings: Settings) -> tuple[MavenArtifact, MavenArtifact]:
    """The integ-test distribution zip and the k-NN plugin zip."""
    return (
        MavenArtifact("org.opensearch.distribution.integ-test-zip", "opensearch", settings.opensearch_version, "zip"),
        MavenArtifact("org.opensearch.plugin", "opensearch-knn", settings.opensearch_knn_version, "zip"),
    )


def painless_artifacts(settings: Settings) -> list[MavenArtifact]:
    """Every jar of the lang-painless module, including the SPI jar that k-NN compiles against."""
    v = settings.opensearch_version
    return [
        MavenArtifact("org.opensearch.plugin", "lang-painless", v),
        MavenArtifact("org.opensearch.plugin", "opensearch-scripting-painless-spi", v),
        MavenArtifact("org.antlr", "antlr4-runtime", ANTLR_VERSION),
        *(MavenArtifact("org.ow2.asm", name, ASM_VERSION) for name in ASM_ARTIFACTS),
    ]


PAINLESS_CLASSES = ("org.opensearch.painless.PainlessPlugin", "org.opensearch.painless.PainlessModulePlugin")
"""Plugin class of lang-painless: ``PainlessPlugin`` in 2.x, renamed ``PainlessModulePlugin`` on main."""


def painless_plugin_class(jar: Path) -> str:
    """Which of :data:`PAINLESS_CLASSES` the lang-painless ``jar`` contains."""
    with zipfile.ZipFile(jar) as zf:
        names = set(zf.namelist())
    for cls in PAINLESS_CLASSES:
        if cls.replace(".", "/") + ".class" in names:
            return cls
    raise RuntimeError(f"{jar} contains none of {', '.join(PAINLESS_CLASSES)}")


def painless_descriptor(opensearch_version: str, classname: str) -> str:
    """``plugin-descriptor.properties`` of the lang-painless module (as its build.gradle declares it)."""
    return (
        "description=An easy, safe and fast scripting language for OpenSearch\n"
        f"version={opensearch_version}\n"
        "name=lang-painless\n"
        f"classname={classname}\n"
        "java.version=11\n"
        f"opensearch.version={opensearch_version}\n"
        "extended.plugins=\n"
        "custom.foldername=\n"
        "has.native.controller=false\n"
    )


ANALYSIS_COMMON_CLASS = "org.opensearch.analysis.common.CommonAnalysisPlugin"


def analysis_common_descriptor(opensearch_version: str) -> str:
    """``plugin-descriptor.properties`` of the analysis-common module (cjk, ngram, synonym … analyzers).

    The integ-test distribution ships without it; its one jar is on Maven Central. It extends
    lang-painless (for the analysis scripts it whitelists), as its build.gradle declares.
    """
    return (
        'description=Adds "built in" analyzers to OpenSearch.\n'
        f"version={opensearch_version}\n"
        "name=analysis-common\n"
        f"classname={ANALYSIS_COMMON_CLASS}\n"
        "java.version=11\n"
        f"opensearch.version={opensearch_version}\n"
        "extended.plugins=lang-painless\n"
        "custom.foldername=\n"
        "has.native.controller=false\n"
    )


# Same grants as upstream modules/lang-painless/src/main/plugin-metadata/plugin-security.policy:
# Painless compiles scripts to classes at runtime.
PAINLESS_POLICY = """grant {
  // needed to generate runtime classes
  permission java.lang.RuntimePermission "createClassLoader";

  // needed to find the classloader to load whitelisted classes from
  permission java.lang.RuntimePermission "getClassLoader";
};
"""


def install_marker(settings: Settings) -> str:
    """Content of the marker file that says the install in ``install_dir`` is complete and current."""
    return (
        f"opensearch={settings.opensearch_version}\n"
        f"opensearch-knn={settings.opensearch_knn_version}\n"
        f"layout={LAYOUT_VERSION}\n"
    )


def render_opensearch_yml(settings: Settings, *, allow_mmap: bool) -> str:
    """The node's ``opensearch.yml``: loopback only, single node, data and logs under the placerec home."""
    base = state_dir(settings)
    lines = [
        "# Generated by placerec dev up; edits are overwritten.",
        "cluster.name: placerec-dev",
        "node.name: placerec-dev-1",
        "network.host: 127.0.0.1",
        f"http.port: {http_port(settings)}",
        "discovery.type: single-node",
        f"path.data: {base / 'data'}",
        f"path.logs: {base / 'logs'}",
        # a nearly full dev disk must not flip indices to read-only
        "cluster.routing.allocation.disk.threshold_enabled: false",
    ]
    if not allow_mmap:
        lines.append("node.store.allow_mmap: false")
    return "\n".join(lines) + "\n"


def render_jvm_options(template: str, settings: Settings) -> str:
    """The distribution's ``jvm.options`` with its relative paths made absolute.

    The start script cd's into the (root-owned) install dir, so the relative ``logs/`` and ``data``
    paths would point at folders the service user cannot write.
    """
    base = state_dir(settings)
    return (
        template.replace("file=logs/gc.log", f"file={base / 'logs' / 'gc.log'}")
        .replace("-Xloggc:logs/gc.log", f"-Xloggc:{base / 'logs' / 'gc.log'}")
        .replace("-XX:HeapDumpPath=data", f"-XX:HeapDumpPath={base / 'data'}")
        .replace("-XX:ErrorFile=logs/", f"-XX:ErrorFile={base / 'logs'}/")
    )


def _max_map_count() -> int | None:
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None


def extract_zip(archive: Path, dest: Path) -> None:
    """Unzip keeping the Unix permission bits (``zipfile`` drops them, and bin/ must stay executable)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)


def _tool_env(settings: Settings, conf_dir: Path) -> dict[str, str]:
    jdk = str(java_home())
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "JAVA_HOME": jdk,
        "OPENSEARCH_JAVA_HOME": jdk,
        "OPENSEARCH_PATH_CONF": str(conf_dir),
        "LANG": "C.UTF-8",
    }


def _assemble(settings: Settings, dest: Path) -> None:
    """Extract the distribution, add lang-painless and analysis-common, install k-NN; move into ``dest``."""
    dist_zip, knn_zip = (fetch(a, settings) for a in distribution_artifacts(settings))
    jars = [fetch(a, settings) for a in painless_artifacts(settings)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest.parent))
    try:
        extract_zip(dist_zip, staging)
        root = staging / dest.name
        if not (root / "bin" / "opensearch").is_file():
            raise RuntimeError(f"{dist_zip} does not contain {dest.name}/bin/opensearch")
        module = root / "modules" / "lang-painless"
        module.mkdir(parents=True)
        for jar in jars:
            shutil.copyfile(jar, module / jar.name)
        (module / "plugin-descriptor.properties").write_text(
            painless_descriptor(settings.opensearch_version, painless_plugin_class(jars[0]))
        )
        (module / "plugin-security.policy").write_text(PAINLESS_POLICY)
        analysis = root / "modules" / "analysis-common"
        analysis.mkdir(parents=True)
        common = MavenArtifact("org.opensearch.plugin", "analysis-common", settings.opensearch_version)
        common_jar = fetch(common, settings)
        shutil.copyfile(common_jar, analysis / common_jar.name)
        (analysis / "plugin-descriptor.properties").write_text(analysis_common_descriptor(settings.opensearch_version))
        # the official installer verifies the descriptor, jar hell and the extended plugin (lang-painless)
        res = subprocess.run(
            [str(root / "bin" / "opensearch-plugin"), "install", "--batch", knn_zip.as_uri()],
            env=_tool_env(settings, root / "config"),
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        log.debug("opensearch-plugin output:\n%s%s", res.stdout, res.stderr)
        if res.returncode != 0:
            raise RuntimeError(f"installing {knn_zip.name} failed:\n{res.stdout}{res.stderr}")
        for path in [root, *root.rglob("*")]:  # readable by the service user whatever our umask is
            path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o444))
        (root / ".placerec-install").write_text(install_marker(settings))
        if dest.exists():
            shutil.rmtree(dest)
        root.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_user() -> str | None:
    """The OS user to run the server as (see :func:`process.ensure_system_user`)."""
    return process.ensure_system_user(SERVICE_USER)


def _check_traversable(path: Path) -> None:
    """Fail clearly if another user cannot reach ``path`` through its parents (we only fix our own home)."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise RuntimeError(
                f"{parent} is not traversable by other users (mode {oct(mode & 0o777)}); "
                f"the OpenSearch user {SERVICE_USER} needs o+x on every parent of {path}"
            )


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def install(settings: Settings) -> None:
    """Download (cached), assemble (once per version) and configure OpenSearch. Idempotent."""
    home = install_dir(settings)
    marker = home / ".placerec-install"
    if not (marker.is_file() and marker.read_text() == install_marker(settings)):
        log.info("assembling OpenSearch %s with k-NN %s", settings.opensearch_version, settings.opensearch_knn_version)
        _assemble(settings, home)

    base = state_dir(settings)
    conf = base / "config"
    for sub in ("config", "config/jvm.options.d", "data", "logs", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    map_count = _max_map_count()
    allow_mmap = map_count is None or map_count >= MIN_MAP_COUNT
    if not allow_mmap:
        log.debug("vm.max_map_count=%s < %d: disabling mmap stores", map_count, MIN_MAP_COUNT)
    _write_if_changed(conf / "opensearch.yml", render_opensearch_yml(settings, allow_mmap=allow_mmap))
    _write_if_changed(conf / "jvm.options", render_jvm_options((home / "config" / "jvm.options").read_text(), settings))
    _write_if_changed(conf / "log4j2.properties", (home / "config" / "log4j2.properties").read_text())

    user = ensure_user()
    if user is not None:
        # the service user reads the install and owns its config (keystore is created there), data, logs, tmp
        for path in (settings.home, base, base / "dist"):
            path.chmod(path.stat().st_mode | 0o111)
        _check_traversable(home)
        pw = pwd.getpwnam(user)
        for sub in ("config", "data", "logs", "tmp"):
            top = base / sub
            for path in [top, *top.rglob("*")]:
                if path.lstat().st_uid != pw.pw_uid:
                    os.lchown(path, pw.pw_uid, pw.pw_gid)


def launch_spec(settings: Settings) -> LaunchSpec:
    """The command that runs the node in the foreground (we detach it ourselves)."""
    home = install_dir(settings)
    base = state_dir(settings)
    jdk = str(java_home())
    env: Mapping[str, str] = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(base),
        "LANG": "C.UTF-8",
        "JAVA_HOME": jdk,
        "OPENSEARCH_JAVA_HOME": jdk,
        "OPENSEARCH_PATH_CONF": str(base / "config"),
        "OPENSEARCH_TMPDIR": str(base / "tmp"),
        # appended after jvm.options, so this wins over its -Xms/-Xmx
        "OPENSEARCH_JAVA_OPTS": f"-Xms{settings.opensearch_heap} -Xmx{settings.opensearch_heap}",
    }
    return LaunchSpec(argv=(str(home / "bin" / "opensearch"),), env=env, cwd=home, user=ensure_user())


def probe(settings: Settings) -> tuple[bool, str]:
    """Healthy when the cluster is green or yellow; detail names the version and the plugins."""
    url = settings.opensearch_url.rstrip("/")
    try:
        health = request_json(f"{url}/_cluster/health", timeout=3)
        info = request_json(url, timeout=3)
        plugins = request_json(f"{url}/_cat/plugins?format=json&h=component", timeout=3)
    except ProbeError as exc:
        return False, str(exc)
    status = health.get("status", "?")
    names = sorted({p.get("component", "?") for p in plugins}) or ["none"]
    version = info.get("version", {}).get("number", "?")
    return status in ("green", "yellow"), f"OpenSearch {version}, cluster {status}, plugins: {', '.join(names)}"
