"""SqlStore: the :class:`~he_agg.server.store.base.Store` protocol on SQLAlchemy 2 Core.

One class serves both databases the server runs on (engines: :mod:`.engine`):

* SQLite, the embedded default: a writer's transaction is ``BEGIN IMMEDIATE``, a reader's
  a deferred BEGIN that WAL lets run beside the writer. A process-wide lock per database
  file serialises this process's writers, so threads queue here rather than spin in
  SQLite's busy handler; writers in other processes wait in the busy handler.
* PostgreSQL (psycopg 3): a writer's transaction first takes one transaction-level
  advisory lock, which serialises writers across processes and replicas just as
  ``BEGIN IMMEDIATE`` does for a SQLite file. Readers take no lock (READ COMMITTED).

``transaction()`` keeps the thread's connection in a thread-local; calls made inside it by
the same thread join it, and so do nested blocks. A write joined to an outer transaction
runs under a SAVEPOINT, so every method stays atomic and a caught StoreConflict leaves the
outer transaction usable (PostgreSQL would otherwise refuse every later statement).
Calls made outside any block run in a short transaction of their own. Because the state
is per thread, a block must not span an ``await``: use the store from synchronous code
(FastAPI's threadpool), or another coroutine on the event loop's thread would join it.

Every database error leaves as :class:`~he_agg.errors.StoreError` (a duplicate key as
:class:`~he_agg.errors.StoreConflict`); no SQLAlchemy or driver exception escapes.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from alembic.util.exc import CommandError
from sqlalchemy.dialects import postgresql, sqlite

from he_agg.api.states import PartyRole, RoundState
from he_agg.errors import StoreConflict, StoreError
from he_agg.server.store import tables as t
from he_agg.server.store.base import (
    EpochRow,
    FederationRow,
    PartyRow,
    RoundRow,
    ShareRow,
    UploadRow,
)
from he_agg.server.store.engine import (
    WRITER,
    create_engine,
    describe,
    is_memory,
    mapped,
    normalise_url,
    writer_lock,
)
from he_agg.server.store.migrations import upgrade_to_head

__all__ = ["ADVISORY_LOCK", "SqlStore"]

# The key of PostgreSQL's advisory lock for he-agg writers ("he-agg" and a 1): any fixed
# 64-bit value works as long as every replica uses the same one.
ADVISORY_LOCK = 0x68_65_2D_61_67_67_00_01


def _ints(text: str | None) -> tuple[int, ...]:
    return tuple(int(value) for value in json.loads(text or "[]"))


def _federation(row: sa.Row[Any]) -> FederationRow:
    values = dict(row._mapping)
    return FederationRow(**{**values, "config": json.loads(values["config"])})


def _party(row: sa.Row[Any]) -> PartyRow:
    values = dict(row._mapping)
    return PartyRow(**{**values, "role": PartyRole(values["role"])})


def _party_values(party: PartyRow) -> dict[str, Any]:
    return {**dataclasses.asdict(party), "role": PartyRole(party.role).value}


def _no_epoch(federation_id: str, epoch: int) -> str:
    return f"no epoch {epoch} in federation {federation_id!r}"


def _round(row: sa.Row[Any]) -> RoundRow:
    values = dict(row._mapping)
    values["state"] = RoundState(values["state"])
    values["decryption_set"] = _ints(values["decryption_set"])
    values["unresponsive"] = _ints(values["unresponsive"])
    return RoundRow(**values)


class _ThreadState(threading.local):
    connection: sa.Connection | None = None  # this thread's open transaction, if any
    changed: bool = False  # the open transaction wrote something parties act on


# writes no party acts on: they do not wake long polls (he_agg.server.watch)
_UNSEEN_WRITES = frozenset({"spend_nonce", "prune_nonces"})


class SqlStore:
    """The server's metadata in SQLite or PostgreSQL; opening it migrates to head."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = normalise_url(url)
        self.dialect = self.url.get_backend_name()
        try:
            self.engine = create_engine(self.url)
        except ImportError as error:  # the driver: psycopg is an optional extra
            raise StoreError(f"{error}: pip install 'he-agg[postgres]'") from error
        except (sa.exc.SQLAlchemyError, OSError) as error:
            # repr(URL) masks the password.
            raise StoreError(f"cannot open {self.url!r}: {describe(error)}") from error
        self._state = _ThreadState()
        # PostgreSQL's advisory lock alone would do; queueing here too keeps waiting
        # writers from each holding a pooled connection.
        self._lock = writer_lock(self.url)
        # One shared in-memory connection: a reader must wait its turn like a writer.
        self._reads_locked = self.dialect == "sqlite" and is_memory(self.url)
        self._closed = False
        self.on_commit: list[Callable[[], None]] = []  # after a write parties act on commits
        if migrate:
            try:
                self.migrate()
            except BaseException:
                self.engine.dispose()
                raise

    def migrate(self) -> None:
        """Bring the schema to head (serialised like any writer); SchemaError if newer."""
        with self.transaction():
            connection = self._state.connection
            assert connection is not None
            try:
                upgrade_to_head(connection)
            except CommandError as error:
                raise StoreError(f"migration failed: {error}") from error

    def close(self) -> None:
        self._closed = True
        self.engine.dispose()

    # ---- transactions ------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[None]:
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._state.connection is not None:
            yield  # join the outer block, which alone commits or rolls back
            return
        with (
            self._lock,
            mapped("transaction"),
            self._connect(writer=True) as connection,
            connection.begin(),
        ):
            if self.dialect == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK)))
            self._state.connection = connection
            self._state.changed = False
            try:
                yield
            finally:
                self._state.connection = None
        if self._state.changed:  # committed (an exception skips this) something parties see
            for listener in self.on_commit:
                listener()

    def _connect(self, *, writer: bool) -> sa.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        connection = self.engine.connect()
        if writer:
            connection.execution_options(**{WRITER: True})
        return connection

    @contextmanager
    def _write(self, what: str) -> Iterator[sa.Connection]:
        """One atomic group of statements: its own transaction, or a savepoint in ours."""
        outer = self._state.connection
        if what not in _UNSEEN_WRITES:
            self._state.changed = True  # long polls wake once this commits
        if outer is not None:
            with mapped(what), outer.begin_nested():
                yield outer
            return
        with self._transaction():
            connection = self._state.connection
            assert connection is not None
            if what not in _UNSEEN_WRITES:
                self._state.changed = True
            with mapped(what):
                yield connection

    @contextmanager
    def _read(self, what: str) -> Iterator[sa.Connection]:
        joined = self._state.connection
        if joined is not None:
            with mapped(what):
                yield joined
            return
        guard = self._lock if self._reads_locked else nullcontext()
        with guard, mapped(what), self._connect(writer=False) as connection, connection.begin():
            yield connection

    def _one(self, what: str, statement: sa.Select[Any]) -> sa.Row[Any] | None:
        with self._read(what) as connection:
            return connection.execute(statement).first()

    def _all(self, what: str, statement: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self._read(what) as connection:
            return list(connection.execute(statement).all())

    def _update(self, what: str, statement: sa.Update, missing: str) -> None:
        with self._write(what) as connection:
            if connection.execute(statement).rowcount == 0:
                raise StoreError(f"{what}: {missing}")

    # ---- federations and enrolment -------------------------------------------------
    def insert_federation(
        self, row: FederationRow, parties: Sequence[PartyRow], epoch: EpochRow
    ) -> None:
        if epoch.federation != row.id:
            raise ValueError(f"epoch row of {epoch.federation!r} given for {row.id!r}")
        values = {**dataclasses.asdict(row), "config": json.dumps(row.config)}
        members = [_party_values(party) for party in parties]
        with self._write("insert_federation") as connection:
            connection.execute(sa.insert(t.federations).values(values))
            if members:
                connection.execute(sa.insert(t.parties), members)
            connection.execute(sa.insert(t.epochs).values(dataclasses.asdict(epoch)))

    def federation(self, federation_id: str) -> FederationRow | None:
        query = sa.select(t.federations).where(t.federations.c.id == federation_id)
        row = self._one("federation", query)
        return None if row is None else _federation(row)

    def federations(self) -> list[FederationRow]:
        query = sa.select(t.federations).order_by(t.federations.c.id)
        return [_federation(row) for row in self._all("federations", query)]

    def set_current_epoch(self, federation_id: str, epoch: int) -> None:
        c, e = t.federations.c, t.epochs.c
        stored = sa.exists().where(e.federation == federation_id, e.epoch == epoch)
        statement = (
            sa.update(t.federations).where(c.id == federation_id, stored).values(epoch=epoch)
        )
        self._update("set_current_epoch", statement, _no_epoch(federation_id, epoch))

    def party_by_key(self, federation_id: str, signing_key: str) -> PartyRow | None:
        c = t.parties.c
        query = (
            sa.select(t.parties)
            .where(c.federation == federation_id, c.signing_key == signing_key)
            .order_by(c.name)
        )
        row = self._one("party_by_key", query)
        return None if row is None else _party(row)

    def parties(self, federation_id: str) -> list[PartyRow]:
        c = t.parties.c
        query = sa.select(t.parties).where(c.federation == federation_id).order_by(c.name)
        return [_party(row) for row in self._all("parties", query)]

    # ---- key epochs -------------------------------------------------------------------
    def insert_epoch(self, row: EpochRow, parties: Sequence[PartyRow]) -> None:
        if any(party.federation != row.federation for party in parties):
            raise ValueError(f"a party of another federation given for {row.federation!r}")
        c = t.parties.c
        with self._write("insert_epoch") as connection:
            connection.execute(sa.insert(t.epochs).values(dataclasses.asdict(row)))
            query = sa.select(t.parties).where(c.federation == row.federation)
            stored = {r.name: _party(r) for r in connection.execute(query)}
            new = []
            for party in parties:
                known = stored.get(party.name)
                if known is None:
                    new.append(_party_values(party))
                elif _party_values(known) != _party_values(party):
                    # Raised inside the block, so the epoch row above is rolled back too.
                    raise StoreConflict(
                        f"insert_epoch: party {party.name!r} is enrolled with another "
                        "role, key or member index"
                    )
            if new:
                connection.execute(sa.insert(t.parties), new)

    def epoch(self, federation_id: str, epoch: int) -> EpochRow | None:
        c = t.epochs.c
        query = sa.select(t.epochs).where(c.federation == federation_id, c.epoch == epoch)
        row = self._one("epoch", query)
        return None if row is None else EpochRow(**row._mapping)

    def epochs(self, federation_id: str) -> list[EpochRow]:
        c = t.epochs.c
        query = sa.select(t.epochs).where(c.federation == federation_id).order_by(c.epoch)
        return [EpochRow(**row._mapping) for row in self._all("epochs", query)]

    def unsettled_epochs(self) -> list[EpochRow]:
        e, f = t.epochs.c, t.federations.c
        query = (
            sa.select(t.epochs)
            .join(t.federations, f.id == e.federation)
            .where(e.retired.is_(None), e.epoch != f.epoch)
            .order_by(e.federation, e.epoch)
        )
        return [EpochRow(**row._mapping) for row in self._all("unsettled_epochs", query)]

    def _update_epoch(self, what: str, federation_id: str, epoch: int, **values: Any) -> None:
        c = t.epochs.c
        statement = (
            sa.update(t.epochs)
            .where(c.federation == federation_id, c.epoch == epoch)
            .values(**values)
        )
        self._update(what, statement, _no_epoch(federation_id, epoch))

    def set_public_key(self, federation_id: str, epoch: int, digest: str) -> None:
        self._update_epoch("set_public_key", federation_id, epoch, public_key=digest)

    def count_decryption(self, federation_id: str, epoch: int, delta: int = 1) -> None:
        used = t.epochs.c.decryptions_used + delta
        self._update_epoch("count_decryption", federation_id, epoch, decryptions_used=used)

    def retire_epoch(self, federation_id: str, epoch: int, at: float) -> None:
        # COALESCE rather than "WHERE retired IS NULL": the row still matches when it was
        # retired already, so only a missing epoch reads as an error.
        retired = sa.func.coalesce(t.epochs.c.retired, at)
        self._update_epoch("retire_epoch", federation_id, epoch, retired=retired)

    # ---- key generation messages ---------------------------------------------------
    def keygen_values(
        self, federation_id: str, epoch: int, kind: str
    ) -> dict[tuple[int, int], str]:
        c = t.keygen.c
        query = sa.select(c.sender, c.recipient, c.value).where(
            c.federation == federation_id, c.epoch == epoch, c.kind == kind
        )
        return {(r.sender, r.recipient): r.value for r in self._all("keygen_values", query)}

    def insert_keygen_value(
        self, federation_id: str, epoch: int, kind: str, sender: int, recipient: int, value: str
    ) -> None:
        statement = sa.insert(t.keygen).values(
            federation=federation_id,
            epoch=epoch,
            kind=kind,
            sender=sender,
            recipient=recipient,
            value=value,
        )
        with self._write("insert_keygen_value") as connection:
            connection.execute(statement)

    # ---- rounds ----------------------------------------------------------------------
    def insert_round(
        self, federation_id: str, deadline: float, opened: float, epoch: int = 0
    ) -> RoundRow:
        c = t.rounds.c
        last = sa.select(sa.func.max(c.number)).where(c.federation == federation_id)
        # Inside a writer's transaction, so no other writer can take the same number.
        with self._write("insert_round") as connection:
            number = int(connection.execute(last).scalar() or 0) + 1
            row = RoundRow(federation_id, number, RoundState.OPEN, deadline, opened, epoch=epoch)
            connection.execute(
                sa.insert(t.rounds).values(
                    federation=federation_id,
                    number=number,
                    state=row.state.value,
                    deadline=deadline,
                    opened=opened,
                    epoch=epoch,
                )
            )
        return row

    def round(self, federation_id: str, number: int) -> RoundRow | None:
        c = t.rounds.c
        query = sa.select(t.rounds).where(c.federation == federation_id, c.number == number)
        row = self._one("round", query)
        return None if row is None else _round(row)

    def rounds(
        self, federation_id: str | None = None, state: RoundState | None = None
    ) -> list[RoundRow]:
        c = t.rounds.c
        query = sa.select(t.rounds).order_by(c.federation, c.number)
        if federation_id is not None:
            query = query.where(c.federation == federation_id)
        if state is not None:
            query = query.where(c.state == RoundState(state).value)
        return [_round(row) for row in self._all("rounds", query)]

    def save_round(self, row: RoundRow) -> None:
        c = t.rounds.c
        statement = (
            sa.update(t.rounds)
            .where(c.federation == row.federation, c.number == row.number)
            .values(
                state=RoundState(row.state).value,
                closed=row.closed,
                reason=row.reason,
                manifest=row.manifest,
                aggregate=row.aggregate,
                attempt=row.attempt,
                # NULL until a set is named, as the pre-Alembic server wrote it.
                decryption_set=json.dumps(list(row.decryption_set)) if row.decryption_set else None,
                attempt_started=row.attempt_started,
                unresponsive=json.dumps(list(row.unresponsive)),
                model=row.model,
            )
        )
        missing = f"no round {row.number} in federation {row.federation!r}"
        self._update("save_round", statement, missing)

    # ---- uploads -----------------------------------------------------------------------
    def insert_upload(self, row: UploadRow) -> None:
        with self._write("insert_upload") as connection:
            connection.execute(sa.insert(t.uploads).values(dataclasses.asdict(row)))

    def upload(self, federation_id: str, number: int, client: str) -> UploadRow | None:
        c = t.uploads.c
        query = sa.select(t.uploads).where(
            c.federation == federation_id, c.round == number, c.client == client
        )
        row = self._one("upload", query)
        return None if row is None else UploadRow(**row._mapping)

    def uploads(self, federation_id: str, number: int) -> list[UploadRow]:
        c = t.uploads.c
        query = (
            sa.select(t.uploads)
            .where(c.federation == federation_id, c.round == number)
            .order_by(c.client)
        )
        return [UploadRow(**row._mapping) for row in self._all("uploads", query)]

    _BLOB_COLUMNS = (
        t.uploads.c.sha256,
        t.shares.c.sha256,
        t.rounds.c.aggregate,
        t.rounds.c.model,
        t.epochs.c.public_key,
        t.keygen.c.value,  # digests for key shares; other kinds' values match no blob
    )

    def referenced_blobs(self) -> set[str]:
        found: set[str] = set()
        for column in self._BLOB_COLUMNS:
            rows = self._all("referenced_blobs", sa.select(column).where(column.is_not(None)))
            found.update(str(row[0]) for row in rows)
        return found

    def blob_in_use(self, digest: str) -> bool:
        for column in self._BLOB_COLUMNS:
            query = sa.select(sa.literal(1)).where(column == digest).limit(1)
            if self._one("blob_in_use", query) is not None:
                return True
        return False

    # ---- decryption shares -----------------------------------------------------------
    def insert_share(self, row: ShareRow) -> None:
        with self._write("insert_share") as connection:
            connection.execute(sa.insert(t.shares).values(dataclasses.asdict(row)))

    def shares(self, federation_id: str, number: int, attempt: int) -> list[ShareRow]:
        c = t.shares.c
        query = (
            sa.select(t.shares)
            .where(c.federation == federation_id, c.round == number, c.attempt == attempt)
            .order_by(c.member)
        )
        return [ShareRow(**row._mapping) for row in self._all("shares", query)]

    # ---- endorsements -------------------------------------------------------------------
    def insert_endorsement(
        self, federation_id: str, number: int, member: int, upload_set: str, body: str
    ) -> None:
        statement = sa.insert(t.endorsements).values(
            federation=federation_id, round=number, member=member, upload_set=upload_set, body=body
        )
        with self._write("insert_endorsement") as connection:
            connection.execute(statement)

    def endorsements(self, federation_id: str, number: int) -> dict[int, tuple[str, str]]:
        c = t.endorsements.c
        query = (
            sa.select(c.member, c.upload_set, c.body)
            .where(c.federation == federation_id, c.round == number)
            .order_by(c.member)
        )
        rows = self._all("endorsements", query)
        return {int(r.member): (r.upload_set, r.body) for r in rows}

    # ---- request nonces ----------------------------------------------------------------
    def spend_nonce(self, key: str, nonce: str, seen: float) -> bool:
        values = {"key": key, "nonce": nonce, "seen": seen}
        # One statement that inserts or does nothing: a replay is a row count of 0,
        # decided by the database's own key check, not by a read that could race.
        statement: sa.Executable
        if self.dialect == "postgresql":
            statement = postgresql.insert(t.nonces).values(values).on_conflict_do_nothing()
        else:
            statement = sqlite.insert(t.nonces).values(values).on_conflict_do_nothing()
        # SQLAlchemy keeps an INSERT's row count only when asked to (psycopg's is lost).
        statement = statement.execution_options(preserve_rowcount=True)
        with self._write("spend_nonce") as connection:
            return connection.execute(statement).rowcount == 1

    def prune_nonces(self, before: float) -> int:
        statement = sa.delete(t.nonces).where(t.nonces.c.seen < before)
        with self._write("prune_nonces") as connection:
            return int(connection.execute(statement).rowcount)
