"""Optuna RDB storages shared by several processes or machines (``train.py --evolve-storage``,
``compare.py --storage``): the URL's database driver checked first, then the storage opened with
heartbeats and one retry of trials whose process died.

A storage URL is SQLAlchemy's: ``sqlite:///path.db``, ``postgresql://user:pw@host:5432/db``,
``mysql+pymysql://user:pw@host/db``. SQLAlchemy picks the driver module from the scheme
(``postgresql://`` -> psycopg 3, ``mysql://`` -> MySQLdb); :data:`DRIVER_PACKAGES` names the pip
package that provides each one, for the one-line error when it is missing.
"""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path

# SQLAlchemy driver name (the part after "+" in a URL, or a dialect's default) -> pip package
DRIVER_PACKAGES: dict[str, str] = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "mysqldb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysqlconnector": "mysql-connector-python",
    "mariadbconnector": "mariadb",
    "asyncmy": "asyncmy",
    "aiomysql": "aiomysql",
    "oracledb": "oracledb",
    "cx_oracle": "cx_Oracle",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}
CONNECT_TRIES = 5  # processes starting together on a new database race to create its tables
CONNECT_TIMEOUT_S = 10  # PostgreSQL: seconds to wait for a server before the connection counts as failed


class StorageError(ValueError):
    """A storage URL that cannot be used: unknown scheme, missing driver, unreachable server (one line)."""


def _shown(url: str) -> str:
    """`url` with its password replaced by ``***`` (for messages)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a parsable URL: its password, if any, hidden by pattern
        from utils.logging import hide_passwords

        return hide_passwords(url)


def require_driver(url: str, flag: str = "--storage") -> None:
    """Check that `url` is a database URL SQLAlchemy knows and that its driver module imports.

    Raises StorageError (one line, naming `flag`, the URL without password and, for a missing
    driver, the pip package to install)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    netloc = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""
    if netloc.count("@") > 1:  # never echo this URL: where its password ends is ambiguous
        raise StorageError(f"{flag}: the URL holds more than one '@'; write an '@' inside the user name or "
                           "password as %40")
    if url.startswith("sqlite") and url.split("///", 1)[-1] in ("", ":memory:"):
        raise StorageError(f"{flag} {url}: an in-memory database is private to one process, so nothing would be "
                           "shared or kept; give a file, e.g. sqlite:///runs/grid.db")
    try:
        dialect = make_url(url).get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:  # before ArgumentError, its base class
        raise StorageError(f"{flag} {_shown(url)}: unknown database scheme {url.split(':', 1)[0]!r}; use "
                           "sqlite:///, postgresql:// or mysql+pymysql://") from None
    except (sqlalchemy.exc.ArgumentError, ValueError) as e:  # ValueError: e.g. a port that is not a number
        raise StorageError(f"{flag} {_shown(url)!r} is not a database URL ({e}); give e.g. sqlite:///study.db or "
                           "postgresql://user:password@host:5432/dbname") from None
    try:
        dialect.import_dbapi()
    except ImportError:
        driver = dialect.driver
        package = DRIVER_PACKAGES.get(driver, driver)
        raise StorageError(f"{flag} {_shown(url)}: its database driver {driver!r} is not installed; "
                           f"pip install '{package}'") from None


def open_storage(url: str, heartbeat_s: int, grace_s: float, flag: str = "--storage"):
    """An Optuna RDBStorage at `url` whose running trials record a heartbeat every `heartbeat_s`
    seconds; a trial whose heartbeat is older than `grace_s` seconds is failed by
    ``optuna.storages.fail_stale_trials`` and enqueued again once (its params and user attributes).

    SQLite: the database's folder is created and connections wait up to 60 s for another
    process's lock. Raises StorageError for a bad URL, a missing driver or a server that cannot
    be reached (the database error's first line)."""
    import optuna
    import sqlalchemy.exc

    require_driver(url, flag)
    kwargs = {}
    if url.startswith("sqlite:///"):
        kwargs = {"connect_args": {"timeout": 60}}
        db = url[len("sqlite:///"):]
        try:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"{flag} {url}: cannot create the database's folder {Path(db).parent}: "
                               f"{e.strerror or e}") from None
    elif url.startswith("postgresql"):  # an unreachable host fails in seconds, not after the OS's TCP timeout
        kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    for attempt in range(CONNECT_TRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=int(heartbeat_s), grace_period=grace_s,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            if attempt == CONNECT_TRIES - 1 or _cannot_connect(e):
                first = str(getattr(e, "orig", e)).strip().splitlines()[0]
                raise StorageError(f"{flag} {_shown(url)}: cannot open the database: {first}") from None
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _cannot_connect(e: Exception) -> bool:
    """True for a failure to reach or log in to the server (retrying only adds timeouts), False for the
    race of processes creating the tables (IntegrityError, a lock), which the retries are for."""
    import sqlalchemy.exc

    if isinstance(e, sqlalchemy.exc.IntegrityError):
        return False
    text = str(getattr(e, "orig", e)).lower()
    return not any(w in text for w in ("locked", "already exists", "duplicate"))


def check_storage(url: str, flag: str = "--storage") -> None:
    """Open the storage at `url` once and close it: a bad URL, a missing driver or a server that
    cannot be reached is refused (StorageError, one line naming `flag`) before any work is done,
    not after the first measurements. Creates Optuna's tables in an empty database."""
    storage = open_storage(url, heartbeat_s=60, grace_s=120, flag=flag)
    storage.engine.dispose()
