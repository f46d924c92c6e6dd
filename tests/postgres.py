"""A throw-away PostgreSQL server for tests: its own data folder under /tmp, a free loopback
port, trust authentication; stopped and deleted at the end.

initdb and pg_ctl refuse to run as root: as root they run as the ``postgres`` user (through
``runuser``), which owns the folder; as anyone else they run as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (newest version first; $PG_BIN wins), else None."""
    dirs = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    for pattern in BIN_GLOBS:
        dirs += sorted(glob.glob(pattern), key=lambda d: [int(x) if x.isdigit() else 0 for x in d.split("/")],
                       reverse=True)
    for d in dirs:
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    path_initdb = shutil.which("initdb")
    return Path(path_initdb).parent if path_initdb and shutil.which("pg_ctl") else None


def skip_reason() -> str | None:
    """Why no server can be started here, or None."""
    if find_bin() is None:
        return "no PostgreSQL binaries (initdb, pg_ctl) on this machine"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no 'postgres' user to run initdb as"
        if not shutil.which("runuser"):
            return "running as root without runuser to run initdb as 'postgres'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_server():
    """Yield a function ``new_db(name) -> URL`` that creates a database on a server started here."""
    bindir = find_bin()
    root = Path(tempfile.mkdtemp(prefix="pgtest-", dir="/tmp"))
    os.chmod(root, 0o700)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = root / "data", _free_port()
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    try:
        subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                  "-E", "UTF8", "--no-sync"]), **run)
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
                                  "-w", "-t", "60", "start"]), **run)
    except subprocess.CalledProcessError as e:
        log = (root / "log").read_text() if (root / "log").is_file() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL test server did not start: {e.stderr or e.stdout}\n{log}") from None
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def new_db(name: str) -> str:
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{port}/{name}"

    try:
        yield new_db
    finally:
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
