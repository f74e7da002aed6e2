"""The Store protocol's contract, run against SQLite and PostgreSQL alike: every method,
the round trip of every row type, duplicate keys, and how a store is opened."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from he_agg.api.states import PartyRole, RoundState
from he_agg.errors import OutOfRange, StoreConflict, StoreError
from he_agg.server.store import (
    EpochRow,
    FederationRow,
    RoundRow,
    ShareRow,
    SqlStore,
    open_store,
    sqlite_url,
)
from tests.store.samples import enrolled, federation, first_epoch, in_threads, parties, upload

# ---- federations and enrolment -----------------------------------------------------


def test_federation_and_parties_round_trip(store: SqlStore) -> None:
    enrolled(store)
    assert store.federation("fed") == federation()
    for party in parties():
        found = store.party_by_key("fed", party.signing_key)
        assert found == party
        assert found is not None and isinstance(found.role, PartyRole)
    assert store.party_by_key("fed", "ff" * 32) is None
    assert store.party_by_key("other", "a1" * 32) is None
    assert store.federation("other") is None
    assert store.epochs("fed") == [first_epoch()]


def test_federation_fields_all_round_trip(store: SqlStore) -> None:
    row = FederationRow("full", {"nested": {"x": [1, 2.5]}}, 2.25, 3)
    epoch = EpochRow("full", 3, "", 2.5, "ab" * 32, 7, 9.75)
    store.insert_federation(row, [], epoch)
    assert store.federation("full") == row
    assert store.epoch("full", 3) == epoch


def test_duplicate_federation_conflicts(store: SqlStore) -> None:
    enrolled(store)
    with pytest.raises(StoreConflict):
        store.insert_federation(federation(), [], dataclasses.replace(first_epoch(), epoch=1))
    assert store.epochs("fed") == [first_epoch()]


def test_a_number_too_large_for_the_store_is_out_of_range_not_a_store_failure(
    store: SqlStore,
) -> None:
    # OutOfRange is a 422 for the caller; a StoreError would be a 503 ("try again later")
    enrolled(store)
    for number in (2**31, 2**63, 10**30):
        try:
            found = store.round("fed", number)
        except OutOfRange:
            continue
        assert found is None
    assert store.epochs("fed") == [first_epoch()]  # the store still works


def test_insert_federation_is_all_or_nothing(store: SqlStore) -> None:
    twice = [*parties("new"), parties("new")[0]]  # the same party name twice
    with pytest.raises(StoreConflict):
        store.insert_federation(federation("new"), twice, first_epoch("new"))
    assert store.federation("new") is None
    assert store.party_by_key("new", "a1" * 32) is None
    assert store.epochs("new") == []


def test_insert_federation_refuses_another_federations_epoch(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="'other' given for 'fed'"):
        store.insert_federation(federation(), parties(), first_epoch("other"))
    assert store.federation("fed") is None
    assert store.epochs("other") == []


def test_parties_in_name_order(store: SqlStore) -> None:
    store.insert_federation(federation(), list(reversed(parties())), first_epoch())
    assert store.parties("fed") == parties()  # alice, m1, m2
    assert store.parties("other") == []


# ---- key generation messages ----------------------------------------------------------


def test_keygen_values_by_epoch_and_kind(store: SqlStore) -> None:
    enrolled(store)
    store.insert_keygen_value("fed", 0, "commitment", 1, 0, "c1")
    store.insert_keygen_value("fed", 0, "commitment", 2, 0, "c2")
    store.insert_keygen_value("fed", 0, "shamir", 1, 2, "s12")
    store.insert_keygen_value("fed", 1, "commitment", 1, 0, "new-epoch")
    assert store.keygen_values("fed", 0, "commitment") == {(1, 0): "c1", (2, 0): "c2"}
    assert store.keygen_values("fed", 0, "shamir") == {(1, 2): "s12"}
    assert store.keygen_values("fed", 1, "commitment") == {(1, 0): "new-epoch"}
    assert store.keygen_values("fed", 2, "commitment") == {}
    with pytest.raises(StoreConflict):
        store.insert_keygen_value("fed", 0, "commitment", 1, 0, "different")
    assert store.keygen_values("fed", 0, "commitment")[(1, 0)] == "c1"


# ---- rounds -------------------------------------------------------------------------------


def test_rounds_are_numbered_per_federation(store: SqlStore) -> None:
    enrolled(store)
    store.insert_federation(federation("other"), [], first_epoch("other"))
    first = store.insert_round("fed", deadline=110.5, opened=100.25)
    assert first == RoundRow("fed", 1, RoundState.OPEN, 110.5, 100.25)
    assert store.round("fed", 1) == first
    assert store.insert_round("fed", 210.0, 200.0).number == 2
    assert store.insert_round("other", 10.0, 0.0).number == 1
    assert store.insert_round("fed", 310.0, 300.0).number == 3
    assert store.round("fed", 4) is None


def test_save_round_writes_every_mutable_field(store: SqlStore) -> None:
    enrolled(store)
    opened = store.insert_round("fed", 110.0, 100.0)
    saved = dataclasses.replace(
        opened,
        state=RoundState.DECRYPTING,
        closed=111.5,
        reason="why not",
        manifest='{"layers": [3]}',
        aggregate="a" * 64,
        attempt=2,
        decryption_set=(3, 1, 2),
        attempt_started=112.75,
        unresponsive=(4,),
        model="b" * 64,
    )
    store.save_round(saved)
    loaded = store.round("fed", 1)
    assert loaded == saved
    assert loaded is not None and isinstance(loaded.state, RoundState)
    cleared = dataclasses.replace(saved, decryption_set=(), unresponsive=(), model=None)
    store.save_round(cleared)
    assert store.round("fed", 1) == cleared


def test_save_round_of_a_missing_round_is_an_error(store: SqlStore) -> None:
    enrolled(store)
    with pytest.raises(StoreError, match="no round 9"):
        store.save_round(RoundRow("fed", 9, RoundState.ABORTED, 1.0, 0.0))


def test_rounds_filter_and_order(store: SqlStore) -> None:
    store.insert_federation(federation("b"), [], first_epoch("b"))
    store.insert_federation(federation("a"), [], first_epoch("a"))
    for name in ("b", "a", "b", "a"):
        store.insert_round(name, 10.0, 0.0)
    published = dataclasses.replace(store.rounds("b")[0], state=RoundState.PUBLISHED)
    store.save_round(published)
    everything = [(r.federation, r.number) for r in store.rounds()]
    assert everything == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert [r.number for r in store.rounds("b")] == [1, 2]
    assert store.rounds(state=RoundState.PUBLISHED) == [published]
    assert [r.number for r in store.rounds("b", RoundState.OPEN)] == [2]
    assert store.rounds("c") == []


# ---- uploads and shares ----------------------------------------------------------------


def test_uploads_round_trip_in_client_order(store: SqlStore) -> None:
    enrolled(store)
    store.insert_round("fed", 10.0, 0.0)
    bob, alice = upload("bob", "1" * 64), upload("alice", "2" * 64)
    store.insert_upload(bob)
    store.insert_upload(alice)
    assert store.uploads("fed", 1) == [alice, bob]
    assert store.upload("fed", 1, "bob") == bob
    assert store.upload("fed", 1, "carol") is None
    assert store.uploads("fed", 2) == []
    with pytest.raises(StoreConflict):
        store.insert_upload(dataclasses.replace(bob, sha256="3" * 64))
    assert store.upload("fed", 1, "bob") == bob


def test_blob_in_use_looks_at_uploads(store: SqlStore) -> None:
    enrolled(store)
    assert not store.blob_in_use("1" * 64)
    store.insert_upload(upload("bob", "1" * 64))
    assert store.blob_in_use("1" * 64)
    assert not store.blob_in_use("2" * 64)


def test_shares_by_attempt_in_member_order(store: SqlStore) -> None:
    enrolled(store)
    rows = [ShareRow("fed", 1, 0, member, str(member) * 64) for member in (3, 1, 2)]
    for row in rows:
        store.insert_share(row)
    store.insert_share(ShareRow("fed", 1, 1, 1, "f" * 64))
    assert [s.member for s in store.shares("fed", 1, 0)] == [1, 2, 3]
    assert store.shares("fed", 1, 0)[2] == rows[0]
    assert store.shares("fed", 1, 1) == [ShareRow("fed", 1, 1, 1, "f" * 64)]
    assert store.shares("fed", 2, 0) == []
    with pytest.raises(StoreConflict):
        store.insert_share(ShareRow("fed", 1, 0, 1, "0" * 64))


# ---- nonces --------------------------------------------------------------------------------


def test_a_nonce_is_spent_once_per_key(store: SqlStore) -> None:
    assert store.spend_nonce("key1", "n1", 100.0)
    assert not store.spend_nonce("key1", "n1", 101.0)
    assert store.spend_nonce("key2", "n1", 100.0)
    assert store.spend_nonce("key1", "n2", 200.0)


def test_pruned_nonces_are_forgotten(store: SqlStore) -> None:
    for i, seen in enumerate((100.0, 150.0, 200.0)):
        store.spend_nonce("key", f"n{i}", seen)
    assert store.prune_nonces(before=150.0) == 1
    assert store.prune_nonces(before=150.0) == 0
    assert store.spend_nonce("key", "n0", 300.0)  # forgotten, so new again
    assert not store.spend_nonce("key", "n1", 300.0)  # seen at 150: kept


# ---- opening and errors --------------------------------------------------------------------


def test_an_in_memory_sqlite_store_is_shared_by_threads() -> None:
    store = open_store("sqlite://")
    try:
        enrolled(store)
        numbers = in_threads(4, lambda _: store.insert_round("fed", 1.0, 0.0).number)
        assert sorted(numbers) == [1, 2, 3, 4]
        assert in_threads(2, lambda _: store.federation("fed")) == [federation()] * 2
    finally:
        store.close()


def test_open_store_and_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "folder" / "he-agg.db"
    store = open_store(sqlite_url(path))
    try:
        assert isinstance(store, SqlStore)
        enrolled(store)
    finally:
        store.close()
    assert path.exists()


@pytest.mark.parametrize("url", ["mysql://user@host/db", "not a url", "redis://localhost"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def test_an_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        open_store("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")


def test_a_closed_store_refuses_calls(store: SqlStore) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.federation("fed")
