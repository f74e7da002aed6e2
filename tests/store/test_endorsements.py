"""The Store contract for members' endorsements of a round's upload set, on SQLite and
PostgreSQL alike: one per (federation, round, member), read back per round, and a second
one from the same member for the same round is a conflict the database itself decides."""

from __future__ import annotations

import pytest

from he_agg.errors import StoreConflict
from he_agg.server.store import SqlStore
from tests.store.samples import enrolled, in_threads

SET_A, SET_B = "a0" * 32, "b0" * 32


def test_endorsements_round_trip_per_round(store: SqlStore) -> None:
    enrolled(store)
    assert store.endorsements("fed", 1) == {}
    store.insert_endorsement("fed", 1, 2, SET_A, '{"member":2}')
    store.insert_endorsement("fed", 1, 1, SET_A, '{"member":1}')
    store.insert_endorsement("fed", 2, 1, SET_B, '{"round":2}')
    assert store.endorsements("fed", 1) == {1: (SET_A, '{"member":1}'), 2: (SET_A, '{"member":2}')}
    assert list(store.endorsements("fed", 1)) == [1, 2]  # ordered by member
    assert store.endorsements("fed", 2) == {1: (SET_B, '{"round":2}')}
    assert store.endorsements("other", 1) == {}


def test_a_second_endorsement_of_a_member_for_a_round_conflicts(store: SqlStore) -> None:
    enrolled(store)
    store.insert_endorsement("fed", 1, 1, SET_A, "first")
    for upload_set, body in ((SET_B, "other set"), (SET_A, "first")):
        with pytest.raises(StoreConflict):
            store.insert_endorsement("fed", 1, 1, upload_set, body)
    assert store.endorsements("fed", 1) == {1: (SET_A, "first")}  # the first one stays


def test_a_conflict_inside_a_transaction_leaves_it_usable(store: SqlStore) -> None:
    enrolled(store)
    store.insert_endorsement("fed", 1, 1, SET_A, "first")
    with store.transaction():
        with pytest.raises(StoreConflict):
            store.insert_endorsement("fed", 1, 1, SET_B, "second")
        store.insert_endorsement("fed", 1, 2, SET_A, "member 2")
    assert store.endorsements("fed", 1) == {1: (SET_A, "first"), 2: (SET_A, "member 2")}


def test_concurrent_endorsements_of_one_member_store_exactly_one(store: SqlStore) -> None:
    enrolled(store)

    def endorse(i: int) -> bool:
        try:
            store.insert_endorsement("fed", 3, 1, SET_A if i % 2 else SET_B, f"body {i}")
        except StoreConflict:
            return False
        return True

    assert sum(in_threads(4, endorse)) == 1
    ((member, (upload_set, body)),) = store.endorsements("fed", 3).items()
    assert member == 1 and upload_set == (SET_A if body in ("body 1", "body 3") else SET_B)
