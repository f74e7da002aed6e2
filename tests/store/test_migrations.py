"""Schema migrations: pre-Alembic databases keep every row, newer ones are left alone,
and each revision's downgrade undoes its upgrade."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from he_agg.api.states import PartyRole, RoundState
from he_agg.errors import SchemaError
from he_agg.server.store import (
    EpochRow,
    FederationRow,
    PartyRow,
    RoundRow,
    ShareRow,
    SqlStore,
    UploadRow,
    sqlite_url,
    tables,
)
from he_agg.server.store.migrations import BASELINE, alembic_config, current_revisions

HEAD = "0004"
NEW_INDEXES = {"uploads_by_sha256", "nonces_by_seen"}
NEW_TABLES = {"endorsements", "epochs"}  # 0003, 0004

# Copied verbatim from `git show f98981c:he_agg/server/storage.py` (_SCHEMA): the schema
# the server created before Alembic, which every existing database has.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS federations (
    id TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0, public_key TEXT, decryptions_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS parties (
    federation TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, signing_key TEXT NOT NULL,
    encryption_key TEXT, member_index INTEGER, PRIMARY KEY (federation, name)
);
CREATE INDEX IF NOT EXISTS parties_by_key ON parties (signing_key);
CREATE TABLE IF NOT EXISTS keygen (
    federation TEXT NOT NULL, epoch INTEGER NOT NULL, kind TEXT NOT NULL, sender INTEGER NOT NULL,
    recipient INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (federation, epoch, kind, sender, recipient)
);
CREATE TABLE IF NOT EXISTS rounds (
    federation TEXT NOT NULL, number INTEGER NOT NULL, state TEXT NOT NULL, deadline REAL NOT NULL,
    opened REAL NOT NULL, closed REAL, reason TEXT, manifest TEXT, aggregate TEXT,
    attempt INTEGER NOT NULL DEFAULT 0, decryption_set TEXT, attempt_started REAL,
    unresponsive TEXT NOT NULL DEFAULT '[]', model TEXT, PRIMARY KEY (federation, number)
);
CREATE TABLE IF NOT EXISTS uploads (
    federation TEXT NOT NULL, round INTEGER NOT NULL, client TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, signature TEXT NOT NULL, timestamp INTEGER NOT NULL, nonce TEXT NOT NULL,
    target TEXT NOT NULL, manifest TEXT NOT NULL, received REAL NOT NULL,
    PRIMARY KEY (federation, round, client)
);
CREATE TABLE IF NOT EXISTS shares (
    federation TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL,
    member INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (federation, round, attempt, member)
);
CREATE TABLE IF NOT EXISTS nonces (
    key TEXT NOT NULL, nonce TEXT NOT NULL, seen REAL NOT NULL, PRIMARY KEY (key, nonce)
);
"""

CONFIG = {"id": "fed", "threshold": 2, "params": {"n": 8192, "primes": [1, 2]}}
ROSTER = '{"roster": {"version": 1}, "signature": "5a"}'
CONFIG_WITH_ROSTER = {**CONFIG, "roster": ROSTER}
EPOCH_ZERO = EpochRow("fed", 0, ROSTER, 1.0)
MANIFEST = '{"layers": [[3, 4]], "scale": 40}'


def old_database(path: Path) -> None:
    """A database as the pre-Alembic server left it: its pragmas, its schema, its rows."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OLD_SCHEMA)
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO federations (id, config, created) VALUES (?, ?, ?)",
        ("fed", json.dumps(CONFIG), 1714000000.25),
    )
    db.execute("UPDATE federations SET public_key = ?, decryptions_used = 1", ("9" * 64,))
    db.execute(
        "INSERT INTO parties VALUES (?, ?, 'client', ?, NULL, NULL)", ("fed", "bob", "b" * 64)
    )
    db.execute(
        "INSERT INTO parties VALUES (?, ?, 'member', ?, ?, ?)", ("fed", "m1", "1" * 64, "e" * 64, 1)
    )
    db.execute(
        "INSERT INTO rounds (federation, number, state, deadline, opened) VALUES (?, ?, ?, ?, ?)",
        ("fed", 1, "open", 1714000600.5, 1714000000.5),
    )
    db.execute(
        "UPDATE rounds SET state = ?, closed = ?, manifest = ?, aggregate = ?, attempt = ?, "
        "decryption_set = ?, attempt_started = ?, unresponsive = ?, model = ?",
        ("published", 1714000300.0, MANIFEST, "a" * 64, 1, json.dumps([1, 2]), 1714000301.0,
         json.dumps([3]), "f" * 64),
    )  # fmt: skip
    for client, digest in (("bob", "c" * 64), ("alice", "d" * 64)):
        db.execute(
            "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("fed", 1, client, digest, 12345, "5" * 128, 1714000100, f"n-{client}",
             f"/v1/federations/fed/rounds/1/updates/{client}", MANIFEST, 1714000101.5),
        )  # fmt: skip
    db.execute("INSERT INTO shares VALUES (?, ?, ?, ?, ?)", ("fed", 1, 1, 2, "7" * 64))
    db.execute("INSERT INTO nonces (key, nonce, seen) VALUES (?, ?, ?)", ("b" * 64, "n1", 5.0))
    db.execute("COMMIT")
    db.close()


def revisions(store: SqlStore) -> tuple[str, ...]:
    with store.engine.connect() as connection:
        return current_revisions(connection)


def indexes(store: SqlStore) -> set[str]:
    with store.engine.connect() as connection:
        inspector = sa.inspect(connection)
        return {
            str(index["name"])
            for table in inspector.get_table_names()
            for index in inspector.get_indexes(table)
        }


def test_a_pre_alembic_database_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "he-agg.db"
    old_database(path)
    store = SqlStore(sqlite_url(path))
    try:
        assert revisions(store) == (HEAD,)
        assert NEW_INDEXES | {"parties_by_key"} <= indexes(store)
        assert table_names(store) >= NEW_TABLES
        assert store.endorsements("fed", 1) == {}  # an old round has none
        assert store.federation("fed") == FederationRow("fed", CONFIG, 1714000000.25, 0)
        assert store.epochs("fed") == [EpochRow("fed", 0, "", 1714000000.25, "9" * 64, 1)]
        assert store.party_by_key("fed", "b" * 64) == PartyRow(
            "fed", "bob", PartyRole.CLIENT, "b" * 64
        )
        assert store.party_by_key("fed", "1" * 64) == PartyRow(
            "fed", "m1", PartyRole.MEMBER, "1" * 64, "e" * 64, 1
        )
        assert store.rounds() == [
            RoundRow("fed", 1, RoundState.PUBLISHED, 1714000600.5, 1714000000.5,
                     1714000300.0, None, MANIFEST, "a" * 64, 1, (1, 2), 1714000301.0, (3,),
                     "f" * 64, 0)
        ]  # fmt: skip
        uploads = store.uploads("fed", 1)
        assert [u.client for u in uploads] == ["alice", "bob"]
        assert uploads[1] == UploadRow(
            "fed", 1, "bob", "c" * 64, 12345, "5" * 128, 1714000100, "n-bob",
            "/v1/federations/fed/rounds/1/updates/bob", MANIFEST, 1714000101.5,
        )  # fmt: skip
        assert store.blob_in_use("d" * 64)
        assert store.shares("fed", 1, 1) == [ShareRow("fed", 1, 1, 2, "7" * 64)]
        assert not store.spend_nonce("b" * 64, "n1", 6.0)  # the old nonce still counts
        assert store.insert_round("fed", 1.0, 0.0).number == 2
    finally:
        store.close()


def _stamp_unknown(url: str) -> None:
    store = SqlStore(url)
    store.insert_federation(FederationRow("fed", {}, 1.0), [], EpochRow("fed", 0, "", 1.0))
    with store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    store.close()


def test_a_newer_schema_is_refused_and_left_alone(database_url: str, tmp_path: Path) -> None:
    _stamp_unknown(database_url)
    path = tmp_path / "store.db"
    before = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""
    with pytest.raises(SchemaError, match=r"'0099' is newer .*head is 0004.*upgrade he-agg"):
        SqlStore(database_url)
    if database_url.startswith("sqlite"):  # not a byte of the file changed
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    unmigrated = SqlStore(database_url, migrate=False)
    try:
        assert revisions(unmigrated) == ("0099",)
        assert unmigrated.federation("fed") is not None
    finally:
        unmigrated.close()


def _migrate(store: SqlStore, target: str) -> None:
    with store.engine.begin() as connection:
        config = alembic_config(connection)
        if target == "head":
            command.upgrade(config, target)
        else:
            command.downgrade(config, target)


def table_names(store: SqlStore) -> set[str]:
    with store.engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def test_downgrade_and_upgrade_again(store: SqlStore) -> None:
    store.insert_federation(FederationRow("fed", CONFIG_WITH_ROSTER, 1.0), [], EPOCH_ZERO)
    store.set_public_key("fed", 0, "9" * 64)
    assert indexes(store) >= NEW_INDEXES
    assert table_names(store) >= NEW_TABLES
    _migrate(store, "0002")  # 0003's downgrade drops the endorsements, nothing else
    assert revisions(store) == ("0002",)
    assert not NEW_TABLES & table_names(store)
    assert indexes(store) >= NEW_INDEXES
    _migrate(store, BASELINE)
    assert revisions(store) == (BASELINE,)
    assert not NEW_INDEXES & indexes(store)
    assert "parties_by_key" in indexes(store)
    _migrate(store, "head")
    assert revisions(store) == (HEAD,)
    assert indexes(store) >= NEW_INDEXES
    assert table_names(store) >= NEW_TABLES
    assert store.federation("fed") == FederationRow("fed", CONFIG_WITH_ROSTER, 1.0)
    assert store.epochs("fed") == [dataclasses.replace(EPOCH_ZERO, public_key="9" * 64)]
    store.insert_endorsement("fed", 1, 2, "ab" * 32, "{}")  # the re-created table works
    assert store.endorsements("fed", 1) == {2: ("ab" * 32, "{}")}


def test_downgrade_to_nothing_then_reopen(database_url: str) -> None:
    store = SqlStore(database_url)
    _migrate(store, "base")
    with store.engine.connect() as connection:
        assert sa.inspect(connection).get_table_names() == ["alembic_version"]
    store.close()
    reopened = SqlStore(database_url)
    try:
        assert revisions(reopened) == (HEAD,)
        assert reopened.federation("fed") is None
    finally:
        reopened.close()


def test_stores_opening_together_migrate_once(database_url: str) -> None:
    barrier = threading.Barrier(4)
    opened: list[SqlStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(SqlStore(database_url))
        except BaseException as error:  # reported below, with the others
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert [revisions(store) for store in opened] == [(HEAD,)] * 4
    finally:
        for store in opened:
            store.close()


def test_tables_match_what_the_migrations_build(store: SqlStore) -> None:
    """tables.py is what autogenerate compares against: it must describe head exactly."""
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), tables.metadata)
    assert differences == []


# ---- 0004: key epochs ------------------------------------------------------------------


def _database_at_0003(database_url: str) -> SqlStore:
    """A store on a database migrated to 0003 only, holding two federations and rounds:
    "fed" at epoch 0 with a roster, its key published and 2 decryptions used; "late" at
    epoch 3 with a null roster; "bare" with no roster key in its config at all."""
    store = SqlStore(database_url, migrate=False)
    with store.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0003")
        insert = sa.text(
            "INSERT INTO federations (id, config, created, epoch, public_key, decryptions_used)"
            " VALUES (:id, :config, :created, :epoch, :public_key, :used)"
        )
        connection.execute(
            insert,
            [
                {"id": "fed", "config": json.dumps(CONFIG_WITH_ROSTER), "created": 1714000000.25,
                 "epoch": 0, "public_key": "9" * 64, "used": 2},
                {"id": "late", "config": json.dumps({**CONFIG, "roster": None}), "created": 5.5,
                 "epoch": 3, "public_key": None, "used": 0},
                {"id": "bare", "config": json.dumps(CONFIG), "created": 6.5, "epoch": 0,
                 "public_key": None, "used": 1},
            ],
        )  # fmt: skip
        connection.execute(
            sa.text(
                "INSERT INTO rounds (federation, number, state, deadline, opened)"
                " VALUES (:federation, :number, 'open', 10.0, 0.0)"
            ),
            [{"federation": "fed", "number": 1}, {"federation": "late", "number": 1}],
        )
    return store


def _federation_columns(store: SqlStore) -> list[tuple[str, str | None, int]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT id, public_key, decryptions_used FROM federations ORDER BY id")
        )
        return [(row.id, row.public_key, row.decryptions_used) for row in rows]


def _columns(store: SqlStore, table: str) -> set[str]:
    with store.engine.connect() as connection:
        return {str(column["name"]) for column in sa.inspect(connection).get_columns(table)}


def test_0004_moves_key_and_budget_into_an_epoch_row(database_url: str) -> None:
    store = _database_at_0003(database_url)
    try:
        _migrate(store, "head")
        assert revisions(store) == (HEAD,)
        assert store.federation("fed") == FederationRow("fed", CONFIG_WITH_ROSTER, 1714000000.25)
        assert store.epochs("fed") == [EpochRow("fed", 0, ROSTER, 1714000000.25, "9" * 64, 2)]
        assert store.epochs("late") == [EpochRow("late", 3, "", 5.5)]
        assert store.epochs("bare") == [EpochRow("bare", 0, "", 6.5, None, 1)]
        assert [(r.federation, r.epoch) for r in store.rounds()] == [("fed", 0), ("late", 3)]
        assert {"public_key", "decryptions_used"}.isdisjoint(_columns(store, "federations"))
        # The migrated rows work with the new API.
        store.count_decryption("fed", 0)
        assert store.insert_round("fed", 1.0, 0.0, epoch=0).number == 2
    finally:
        store.close()


def test_0004_downgrade_restores_the_current_epochs_values(database_url: str) -> None:
    store = _database_at_0003(database_url)
    try:
        _migrate(store, "head")
        store.count_decryption("fed", 0)  # 3 now: the downgrade must carry it back
        store.insert_epoch(EpochRow("late", 4, ROSTER, 7.5, "8" * 64, 9), [])  # not current
        _migrate(store, "0003")
        assert revisions(store) == ("0003",)
        assert "epochs" not in table_names(store)
        assert "epoch" not in _columns(store, "rounds")
        assert _federation_columns(store) == [
            ("bare", None, 1),
            ("fed", "9" * 64, 3),
            ("late", None, 0),  # epoch 3's values, not epoch 4's
        ]
        _migrate(store, "head")  # and up again, as it came
        assert store.epochs("fed") == [EpochRow("fed", 0, ROSTER, 1714000000.25, "9" * 64, 3)]
        assert [r.epoch for r in store.rounds("late")] == [3]
    finally:
        store.close()
