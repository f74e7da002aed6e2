"""What each backend promises beyond the protocol: SQLite's pragmas and BEGIN IMMEDIATE,
PostgreSQL's advisory lock, and the URLs each accepts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from he_agg.errors import StoreError
from he_agg.server.store import SqlStore, sqlite_url
from he_agg.server.store.engine import normalise_url
from he_agg.server.store.sql import ADVISORY_LOCK
from tests.pg import PostgresCluster


def test_sqlite_connections_are_wal_full_sync_with_foreign_keys(tmp_path: Path) -> None:
    store = SqlStore(sqlite_url(tmp_path / "x.db"))
    try:
        with store.engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA synchronous").scalar() == 2  # FULL
            assert pragma("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


def test_a_sqlite_transaction_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = SqlStore(sqlite_url(path))
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with store.transaction():
            store.federation("nothing")  # a read only, yet BEGIN IMMEDIATE took the lock
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # and released it at the end
        other.execute("ROLLBACK")
    finally:
        other.close()
        store.close()


def test_a_postgres_transaction_holds_the_advisory_lock(postgres: PostgresCluster) -> None:
    url = postgres.new_database_url()
    store = SqlStore(url)
    database = url.rsplit("/", 1)[1]
    probe = "SELECT pg_try_advisory_xact_lock(%s)"
    try:
        with psycopg.connect(postgres.admin_dsn(database), autocommit=True) as other:
            with store.transaction():
                store.federation("nothing")
                assert other.execute(probe, (ADVISORY_LOCK,)).fetchone() == (False,)
            assert other.execute(probe, (ADVISORY_LOCK,)).fetchone() == (True,)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_urls_get_the_psycopg_driver(url: str, driver: str) -> None:
    assert normalise_url(url).drivername == driver


def test_sqlite_url_round_trips_the_path(tmp_path: Path) -> None:
    path = tmp_path / "a b" / "he-agg.db"
    assert normalise_url(sqlite_url(path)).database == str(path)
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        normalise_url("mysql://u@h/db")
