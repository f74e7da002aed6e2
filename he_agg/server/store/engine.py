"""Opening a database for SqlStore: URLs, engines, per-connection setup, error mapping.

SQLite, the embedded default, gets WAL, ``synchronous=FULL`` and ``foreign_keys=ON`` on
every connection, and we take over pysqlite's transaction handling (as SQLAlchemy's
pysqlite documentation describes) so that BEGIN is ours: ``BEGIN IMMEDIATE`` on a
writer's connection, a plain deferred BEGIN on a reader's, which WAL lets run beside a
writer. PostgreSQL URLs get the psycopg 3 driver.

:func:`mapped` turns SQLAlchemy's exceptions, and so the drivers' beneath them, into
:class:`~he_agg.errors.StoreError` and :class:`~he_agg.errors.StoreConflict`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import StaticPool

from he_agg.errors import OutOfRange, StoreConflict, StoreError

__all__ = [
    "WRITER",
    "create_engine",
    "describe",
    "is_memory",
    "mapped",
    "normalise_url",
    "writer_lock",
]

WRITER = "he_agg_writer"  # execution option: this connection is a writer's (IMMEDIATE)
_SQLITE_BUSY_SECONDS = 30.0  # how long another process's writer may keep us waiting

# The process-wide writer locks, one per SQLite file, shared by every SqlStore on it.
_FILE_LOCKS: dict[str, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def normalise_url(url: str) -> sa.URL:
    """Parse ``url``; plain ``postgresql://`` (or ``postgres://``) gets the psycopg 3 driver."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as error:
        raise StoreError(f"not a database URL: {url!r}") from error
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database {parsed.drivername!r}: use sqlite:///PATH or "
            "postgresql://USER@HOST/DB"
        )
    return parsed


def is_memory(url: sa.URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # isolation_level=None: pysqlite emits no BEGIN (nor COMMIT before DDL) of its own.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: sa.Connection) -> None:
    writer = connection.get_execution_options().get(WRITER, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def writer_lock(url: sa.URL) -> threading.RLock:
    """This process's lock for writers to ``url``: shared per SQLite file, else private."""
    if url.get_backend_name() != "sqlite" or is_memory(url) or not url.database:
        return threading.RLock()
    key = str(Path(url.database).resolve())
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(key, threading.RLock())


def create_engine(url: sa.URL) -> sa.Engine:
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True)
    options: dict[str, Any] = {
        "connect_args": {"timeout": _SQLITE_BUSY_SECONDS, "check_same_thread": False}
    }
    if is_memory(url):
        # A private in-memory database exists once per connection: share a single one.
        options["poolclass"] = StaticPool
    elif url.database and not url.query.get("uri"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **options)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def describe(error: Exception) -> str:
    """The driver's own message, first line only (SQLAlchemy's adds the SQL and a link)."""
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _is_duplicate(error: sa.exc.IntegrityError) -> bool:
    original = error.orig
    if getattr(original, "sqlstate", None) == "23505":  # PostgreSQL unique_violation
        return True
    name = getattr(original, "sqlite_errorname", "")
    return name in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """Turn SQLAlchemy's (and so the drivers') exceptions into he-agg's."""
    try:
        yield
    except sa.exc.IntegrityError as error:
        if _is_duplicate(error):
            raise StoreConflict(f"{what}: a row with that key exists already") from error
        raise StoreError(f"{what}: {describe(error)}") from error
    except sa.exc.DataError as error:
        if getattr(error.orig, "sqlstate", None) == "22003":  # PostgreSQL: out of range
            raise OutOfRange(f"{what}: a number is too large for the store") from error
        raise StoreError(f"{what}: {describe(error)}") from error
    except sa.exc.SQLAlchemyError as error:
        raise StoreError(f"{what}: {describe(error)}") from error
    except OverflowError as error:  # sqlite3 refuses an int past 64 bits before SQLAlchemy
        raise OutOfRange(f"{what}: a number is too large for the store") from error
