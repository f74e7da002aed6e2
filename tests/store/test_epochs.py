"""The Store contract for key epochs, on SQLite and PostgreSQL alike: each epoch's own row
(roster, collective key, budget τ, retirement), the parties a new epoch brings, the
current epoch, and the epoch every round is fixed to when it opens."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from he_agg.api.states import PartyRole, RoundState
from he_agg.errors import StoreConflict, StoreError
from he_agg.server.store import EpochRow, PartyRow, SqlStore
from tests.store.samples import ROSTER, enrolled, first_epoch, parties

NEXT_ROSTER = '{"roster": {"version": 2, "members": ["m1", "m2", "m3"]}, "signature": "6b"}'
M3 = PartyRow("fed", "m3", PartyRole.MEMBER, "b3" * 32, "c3" * 32, 3)


def second_epoch(federation_id: str = "fed") -> EpochRow:
    return EpochRow(federation_id, 1, NEXT_ROSTER, created=1714100000.5)


# ---- epochs and their parties -------------------------------------------------------------


def test_insert_epoch_adds_the_new_parties_and_skips_the_stored_ones(store: SqlStore) -> None:
    enrolled(store)
    store.insert_epoch(second_epoch(), [*parties(), M3])  # alice, m1, m2 stored as they are
    assert store.epoch("fed", 1) == second_epoch()
    assert store.parties("fed") == [*parties(), M3]
    assert store.party_by_key("fed", M3.signing_key) == M3


def test_every_epoch_field_round_trips(store: SqlStore) -> None:
    enrolled(store)
    row = EpochRow("fed", 7, NEXT_ROSTER, 3.25, "ab" * 32, 4, 5.5)
    store.insert_epoch(row, [])
    assert store.epoch("fed", 7) == row


def test_epochs_in_number_order(store: SqlStore) -> None:
    enrolled(store)
    third = dataclasses.replace(second_epoch(), epoch=2, roster=ROSTER)
    store.insert_epoch(third, [])
    store.insert_epoch(second_epoch(), [])
    assert store.epochs("fed") == [first_epoch(), second_epoch(), third]
    assert store.epoch("fed", 3) is None
    assert store.epoch("other", 0) is None
    assert store.epochs("other") == []


def test_an_existing_epoch_conflicts_and_writes_nothing(store: SqlStore) -> None:
    enrolled(store)
    again = dataclasses.replace(first_epoch(), roster=NEXT_ROSTER)
    with pytest.raises(StoreConflict):
        store.insert_epoch(again, [M3])
    assert store.epochs("fed") == [first_epoch()]
    assert store.parties("fed") == parties()  # m3 was not added either


@pytest.mark.parametrize(
    "change",
    [
        {"role": PartyRole.CLIENT},
        {"signing_key": "f1" * 32},
        {"encryption_key": "f2" * 32},
        {"encryption_key": None},
        {"member_index": 5},
        {"member_index": None},
    ],
)
def test_a_party_stored_differently_conflicts_and_writes_nothing(
    store: SqlStore, change: dict[str, Any]
) -> None:
    enrolled(store)
    m1 = dataclasses.replace(parties()[1], **change)
    with pytest.raises(StoreConflict, match="'m1'"):
        store.insert_epoch(second_epoch(), [M3, m1])  # m3 comes first, and goes too
    assert store.epoch("fed", 1) is None
    assert store.parties("fed") == parties()


def test_the_same_new_party_twice_conflicts(store: SqlStore) -> None:
    enrolled(store)
    with pytest.raises(StoreConflict):
        store.insert_epoch(second_epoch(), [M3, M3])
    assert store.epoch("fed", 1) is None
    assert store.parties("fed") == parties()


def test_insert_epoch_refuses_another_federations_party(store: SqlStore) -> None:
    enrolled(store)
    with pytest.raises(ValueError, match="another federation"):
        store.insert_epoch(second_epoch(), [dataclasses.replace(M3, federation="other")])
    assert store.epoch("fed", 1) is None


def test_a_conflict_inside_a_transaction_leaves_it_usable(store: SqlStore) -> None:
    enrolled(store)
    with store.transaction():
        with pytest.raises(StoreConflict):
            store.insert_epoch(second_epoch(), [dataclasses.replace(M3, name="m1")])
        store.insert_epoch(second_epoch(), [M3])
    assert store.epochs("fed") == [first_epoch(), second_epoch()]
    assert store.parties("fed") == [*parties(), M3]


# ---- the current epoch --------------------------------------------------------------------


def test_set_current_epoch(store: SqlStore) -> None:
    enrolled(store)
    store.insert_epoch(second_epoch(), [])
    store.set_current_epoch("fed", 1)
    row = store.federation("fed")
    assert row is not None and row.epoch == 1
    store.set_current_epoch("fed", 0)  # back, e.g. when epoch 1 is abandoned
    row = store.federation("fed")
    assert row is not None and row.epoch == 0


@pytest.mark.parametrize(("federation_id", "epoch"), [("fed", 1), ("ghost", 0)])
def test_the_current_epoch_must_be_stored(store: SqlStore, federation_id: str, epoch: int) -> None:
    enrolled(store)
    with pytest.raises(StoreError, match=f"no epoch {epoch} in federation '{federation_id}'"):
        store.set_current_epoch(federation_id, epoch)
    row = store.federation("fed")
    assert row is not None and row.epoch == 0


# ---- per-epoch key, budget and retirement -------------------------------------------------


def test_public_key_and_decryption_count_are_per_epoch(store: SqlStore) -> None:
    enrolled(store)
    store.insert_epoch(second_epoch(), [])
    store.set_public_key("fed", 0, "9" * 64)
    store.set_public_key("fed", 1, "8" * 64)
    store.count_decryption("fed", 0)
    store.count_decryption("fed", 0)
    store.count_decryption("fed", 1)
    zero, one = store.epochs("fed")
    assert (zero.public_key, zero.decryptions_used) == ("9" * 64, 2)
    assert (one.public_key, one.decryptions_used) == ("8" * 64, 1)


def test_retiring_keeps_the_first_time(store: SqlStore) -> None:
    enrolled(store)
    store.insert_epoch(second_epoch(), [])
    store.retire_epoch("fed", 0, 1714200000.25)
    store.retire_epoch("fed", 0, 1714300000.0)  # again, later: no change
    assert store.epoch("fed", 0) == dataclasses.replace(first_epoch(), retired=1714200000.25)
    assert store.epoch("fed", 1) == second_epoch()  # the other epoch is untouched


@pytest.mark.parametrize("method", ["set_public_key", "count_decryption", "retire_epoch"])
def test_updating_a_missing_epoch_is_an_error(store: SqlStore, method: str) -> None:
    enrolled(store)
    with pytest.raises(StoreError, match="no epoch 1 in federation 'fed'") as raised:
        if method == "set_public_key":
            store.set_public_key("fed", 1, "0" * 64)
        elif method == "count_decryption":
            store.count_decryption("fed", 1)
        else:
            store.retire_epoch("fed", 1, 1.0)
    assert not isinstance(raised.value, StoreConflict)
    assert store.epochs("fed") == [first_epoch()]


# ---- rounds under an epoch ----------------------------------------------------------------


def test_a_round_keeps_the_epoch_it_opened_under(store: SqlStore) -> None:
    enrolled(store)
    first = store.insert_round("fed", 10.0, 0.0)
    second = store.insert_round("fed", 20.0, 10.0, epoch=1)
    assert (first.epoch, second.epoch) == (0, 1)
    assert store.round("fed", 1) == first
    assert store.round("fed", 2) == second
    assert [r.epoch for r in store.rounds("fed")] == [0, 1]


def test_save_round_leaves_the_epoch_alone(store: SqlStore) -> None:
    enrolled(store)
    opened = store.insert_round("fed", 10.0, 0.0, epoch=2)
    store.save_round(dataclasses.replace(opened, state=RoundState.ABORTED, epoch=5))
    saved = store.round("fed", 1)
    assert saved is not None
    assert (saved.state, saved.epoch) == (RoundState.ABORTED, 2)


def test_unsettled_epochs_are_those_neither_current_nor_retired(store: SqlStore) -> None:
    enrolled(store)
    assert store.unsettled_epochs() == []  # the first epoch is current
    store.insert_epoch(second_epoch(), [])
    assert store.unsettled_epochs() == [second_epoch()]  # its DKG runs
    store.set_current_epoch("fed", 1)
    assert store.unsettled_epochs() == [first_epoch()]  # the old one, rounds left
    store.retire_epoch("fed", 0, 9.0)
    assert store.unsettled_epochs() == []


def test_federations_are_listed_by_id(store: SqlStore) -> None:
    enrolled(store)
    assert [row.id for row in store.federations()] == ["fed"]
