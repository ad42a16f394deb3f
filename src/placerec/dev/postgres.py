"""Local PostgreSQL for Airflow's metadata database (Debian's server binaries, our own cluster).

The cluster lives under ``<home>/postgres`` and listens **only** on a unix socket in ``<home>/postgres/run``
(``listen_addresses = ''``): no TCP port, so no password anywhere. Clients authenticate by ``peer``: the
OS user name is the role name. The Airflow role is the OS user placerec runs as (:func:`db_user`) and owns
the database :data:`DB_NAME`. As root the server runs as the OS user ``postgres`` (PostgreSQL refuses root);
otherwise as ourselves.
"""

from __future__ import annotations

import getpass
import logging
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

from placerec.dev import process
from placerec.dev.process import LaunchSpec
from placerec.settings import Settings

log = logging.getLogger(__name__)

PG_ROOT = Path("/usr/lib/postgresql")
"""Where Debian installs each major version's server: ``/usr/lib/postgresql/<major>/bin``."""

SERVICE_USER = "postgres"
"""OS user the server runs as when we are root (created by Debian's package; we create it if missing)."""

DB_NAME = "airflow"
PORT = 5432
"""No TCP: the port only names the socket file ``.s.PGSQL.<port>``."""

MAX_CONNECTIONS = 100
SHARED_BUFFERS = "128MB"

SOCKET_PATH_MAX = 107
"""``sun_path`` limit of a unix socket path on Linux (108 bytes with the trailing NUL)."""


def state_dir(settings: Settings) -> Path:
    return settings.home / "postgres"


def data_dir(settings: Settings) -> Path:
    return state_dir(settings) / "data"


def run_dir(settings: Settings) -> Path:
    """The unix socket directory (the only way to reach the server)."""
    return state_dir(settings) / "run"


def socket_path(settings: Settings) -> Path:
    return run_dir(settings) / f".s.PGSQL.{PORT}"


def marker_file(settings: Settings) -> Path:
    """Written after a complete ``initdb``; a data dir without it is a half-made cluster and is redone."""
    return state_dir(settings) / ".initdb-done"


def db_user() -> str:
    """The role Airflow connects as: the OS user placerec runs as (peer authentication)."""
    return getpass.getuser()


def url(settings: Settings) -> str:
    """libpq URI of the Airflow database (usable as ``psql '<uri>'``)."""
    return f"postgresql:///{DB_NAME}?host={quote(str(run_dir(settings)), safe='/')}"


def sqlalchemy_url(settings: Settings, driver: str = "psycopg2") -> str:
    """SQLAlchemy URL of the Airflow database over the unix socket: ``postgresql+psycopg2://<user>@/airflow?host=<dir>``.

    An empty host part plus a ``host`` query argument is how SQLAlchemy hands a socket *directory* to libpq
    (psycopg2) and to asyncpg alike; the path is percent-encoded except for its slashes.
    """
    return (
        f"postgresql+{driver}://{quote(db_user(), safe='')}@/{DB_NAME}?host={quote(str(run_dir(settings)), safe='/')}"
    )


# --- binaries ----------------------------------------------------------------------------------


def _major_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.name)) or (-1,)


def find_bin_dir(root: Path = PG_ROOT, prefer: str | None = None) -> Path | None:
    """``<root>/<major>/bin`` holding a ``postgres`` binary: major ``prefer`` if installed, else the newest."""
    candidates = sorted(
        (d / "bin" for d in root.glob("*") if (d / "bin" / "postgres").is_file()),
        key=lambda b: _major_key(b.parent),
    )
    if prefer is not None:
        for b in candidates:
            if b.parent.name == prefer:
                return b
    return candidates[-1] if candidates else None


def cluster_major(settings: Settings) -> str | None:
    """Major version of an existing cluster (``PG_VERSION``), or None when there is none yet."""
    try:
        return (data_dir(settings) / "PG_VERSION").read_text().strip() or None
    except OSError:
        return None


def bin_dir(settings: Settings) -> Path:
    """Server binaries matching the existing cluster (a major upgrade must not touch its data), else the newest."""
    major = cluster_major(settings) if marker_file(settings).is_file() else None
    found = find_bin_dir(prefer=major)
    if found is None:
        raise RuntimeError(f"no PostgreSQL server under {PG_ROOT}/*/bin: run `placerec dev up` as root to install it")
    if major is not None and found.parent.name != major:
        raise RuntimeError(
            f"{data_dir(settings)} was made by PostgreSQL {major}, but only {found.parent.name} is installed "
            f"under {PG_ROOT}; install postgresql-{major} or move the old cluster away"
        )
    return found


def _apt_lists_empty(lists: Path = Path("/var/lib/apt/lists")) -> bool:
    return not any(lists.glob("*_Packages*"))


def ensure_server(root: Path = PG_ROOT) -> Path:
    """The newest server bin dir, installing Debian's ``postgresql`` package first when none is there."""
    found = find_bin_dir(root)
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"no PostgreSQL server under {root}/*/bin; install it (Debian: apt-get install postgresql)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if _apt_lists_empty():
        log.info("apt lists are empty: running apt-get update")
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True, text=True)
    log.info("installing PostgreSQL: apt-get install -y postgresql")
    res = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"apt-get install postgresql failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    found = find_bin_dir(root)
    if found is None:
        raise RuntimeError(f"apt-get installed postgresql, but there is still no server under {root}/*/bin")
    return found


# --- config ------------------------------------------------------------------------------------


def render_conf(settings: Settings) -> str:
    """``placerec.conf``, included from the ``postgresql.conf`` that initdb wrote (and re-rendered on every up)."""
    return (
        "# Generated by placerec dev up; edits are overwritten.\n"
        "listen_addresses = ''\n"  # no TCP at all
        f"unix_socket_directories = '{run_dir(settings)}'\n"
        "unix_socket_permissions = 0770\n"
        f"port = {PORT}\n"
        f"max_connections = {MAX_CONNECTIONS}\n"
        f"shared_buffers = {SHARED_BUFFERS}\n"
        "fsync = on\n"
        "timezone = 'UTC'\n"
        "log_timezone = 'UTC'\n"
        "logging_collector = off\n"  # stderr goes to <home>/logs/postgres.log
        "log_line_prefix = '%m [%p] %q%u@%d '\n"
    )


HBA = (
    "# Generated by placerec dev up: unix socket only, OS user name = role name.\n"
    "# TYPE  DATABASE  USER  METHOD\n"
    "local   all       all   peer\n"
)

INCLUDE_LINE = "include_if_exists = 'placerec.conf'"


def bootstrap_sql() -> str:
    """Idempotent psql script: the login role and the database it owns (``:user``/``:db`` are psql variables)."""
    return (
        "SELECT format('CREATE ROLE %I LOGIN', :'user') "
        "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user')\\gexec\n"
        "SELECT format('CREATE DATABASE %I OWNER %I ENCODING ''UTF8''', :'db', :'user') "
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n"
    )


# --- install -----------------------------------------------------------------------------------


def ensure_user() -> str | None:
    """The OS user to run the server as (see :func:`process.ensure_system_user`)."""
    return process.ensure_system_user(SERVICE_USER)


def superuser() -> str:
    """The cluster's superuser role: initdb names it after the OS user that ran it."""
    return ensure_user() or getpass.getuser()


def _check_traversable(path: Path, user: str) -> None:
    """Fail clearly if another user cannot reach ``path`` through its parents."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise RuntimeError(
                f"{parent} is not traversable by other users (mode {oct(mode & 0o777)}); "
                f"the PostgreSQL user {user} needs o+x on every parent of {path}"
            )


def _tool_env() -> dict[str, str]:
    """Clean environment for the server and its tools: no PG* variables of the caller leak in."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}


def _run_as(
    user: str | None, argv: list[str], *, cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        input=stdin,
        env=_tool_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
    )


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    for path in [top, *top.rglob("*")]:
        st = path.lstat()
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.lchown(path, uid, gid)


def _initdb(settings: Settings, bindir: Path, user: str | None) -> None:
    data = data_dir(settings)
    if data.exists():  # left over from an interrupted initdb (no marker): start over
        log.info("removing incomplete cluster %s", data)
        shutil.rmtree(data)
    data.mkdir(mode=0o700)
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(data, pw.pw_uid, pw.pw_gid)
    log.info("initdb %s (PostgreSQL %s)", data, bindir.parent.name)
    res = _run_as(
        user,
        [
            str(bindir / "initdb"),
            "--pgdata",
            str(data),
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--auth-local",
            "peer",
            "--auth-host",
            "reject",
        ],
        cwd=state_dir(settings),
    )
    if res.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    conf = data / "postgresql.conf"
    conf.write_text(conf.read_text() + f"\n# placerec\n{INCLUDE_LINE}\n")
    marker_file(settings).write_text(f"{bindir.parent.name}\n")


def install(settings: Settings) -> None:
    """Server binaries (apt, once), cluster (initdb, once), config (every time). Idempotent."""
    bindir = ensure_server()
    user = ensure_user()
    base = state_dir(settings)
    base.mkdir(parents=True, exist_ok=True)
    run = run_dir(settings)
    if len(str(socket_path(settings)).encode()) > SOCKET_PATH_MAX:
        raise RuntimeError(f"socket path {socket_path(settings)} exceeds {SOCKET_PATH_MAX} bytes: use a shorter home")
    if user is not None:
        for path in (settings.home, base):
            path.chmod(path.stat().st_mode | 0o111)
        _check_traversable(run, user)
    if not marker_file(settings).is_file():
        _initdb(settings, bindir, user)
    bin_dir(settings)  # the cluster's major must still be installed
    data = data_dir(settings)
    run.mkdir(exist_ok=True)
    run.chmod(0o755)
    _write_if_changed(data / "placerec.conf", render_conf(settings))
    _write_if_changed(data / "pg_hba.conf", HBA)
    if user is not None:
        pw = pwd.getpwnam(user)
        _chown_tree(data, pw.pw_uid, pw.pw_gid)
        os.chown(run, pw.pw_uid, pw.pw_gid)
    data.chmod(0o700)


def launch_spec(settings: Settings) -> LaunchSpec:
    """The postmaster in the foreground (we detach it); it logs to stderr, i.e. our log file."""
    data = data_dir(settings)
    return LaunchSpec(
        argv=(str(bin_dir(settings) / "postgres"), "-D", str(data)),
        env=_tool_env(),
        cwd=data,
        user=ensure_user(),
    )


def bootstrap(settings: Settings) -> tuple[bool, str]:
    """Create the Airflow role and database once the server accepts connections; False while it does not yet."""
    bindir = bin_dir(settings)
    run = run_dir(settings)
    user = ensure_user()
    res = _run_as(
        user,
        [
            str(bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"user={db_user()}",
            "-v",
            f"db={DB_NAME}",
            "-h",
            str(run),
            "-p",
            str(PORT),
            "-U",
            superuser(),
            "-d",
            "postgres",
        ],
        cwd=state_dir(settings),
        stdin=bootstrap_sql(),
    )
    if res.returncode == 2:  # psql: could not connect (no socket yet, or "the database system is starting up")
        return False, " ".join(res.stderr.split())[:200] or "server not accepting connections yet"
    if res.returncode != 0:
        raise RuntimeError(f"creating role/database {db_user()}/{DB_NAME} failed:\n{res.stdout}{res.stderr}")
    return True, f"role {db_user()} owns database {DB_NAME}"


def probe(settings: Settings) -> tuple[bool, str]:
    """Healthy when the Airflow role can open the Airflow database; detail: version, socket, connections."""
    try:
        import psycopg2
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        return False, f"psycopg2 missing: {exc}"
    sock = socket_path(settings)
    try:
        conn = psycopg2.connect(
            dbname=DB_NAME, user=db_user(), host=str(run_dir(settings)), port=PORT, connect_timeout=3
        )
    except psycopg2.Error as exc:
        # first line only: libpq's hint about the socket file repeats what we already name
        return False, str(exc).strip().splitlines()[0][:200] if str(exc).strip() else f"cannot connect via {sock}"
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('server_version'), current_setting('max_connections')::int, "
                "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            )
            version, max_conn, used = cur.fetchone()
    except psycopg2.Error as exc:
        return False, " ".join(str(exc).split())[:200]
    finally:
        conn.close()
    version = version.split()[0]
    return True, f"PostgreSQL {version}, socket {sock}, db {DB_NAME} as {db_user()}, {used}/{max_conn} connections"
