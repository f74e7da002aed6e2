"""Transactions and concurrency, on SQLite and PostgreSQL alike: rollback, nesting,
isolation from other threads and other store instances, and the serialisation the
server relies on (distinct round numbers, a nonce spent exactly once)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from he_agg.errors import StoreConflict
from he_agg.server.store import FederationRow, SqlStore
from tests.store.samples import enrolled, federation, first_epoch, in_threads, parties, upload

# ---- transactions --------------------------------------------------------------------------


def test_an_exception_rolls_the_whole_transaction_back(store: SqlStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        enrolled(store)
        store.insert_round("fed", 10.0, 0.0)
        store.spend_nonce("k", "n", 1.0)
        assert store.federation("fed") is not None  # visible inside the block
        raise RuntimeError("abort")
    assert store.federation("fed") is None
    assert store.rounds() == []
    assert store.spend_nonce("k", "n", 1.0)


def test_nested_blocks_commit_only_at_the_outermost(store: SqlStore) -> None:
    seen_from_another_thread: list[FederationRow | None] = []
    with store.transaction():
        with store.transaction():
            enrolled(store)
        # The inner block has ended, but its rows are not committed yet.
        with ThreadPoolExecutor(1) as pool:
            seen_from_another_thread.append(pool.submit(store.federation, "fed").result())
        assert store.federation("fed") is not None
    assert seen_from_another_thread == [None]
    assert store.federation("fed") == federation()


def test_an_inner_exception_rolls_back_the_outer_block_too(store: SqlStore) -> None:
    with pytest.raises(KeyError), store.transaction():
        store.insert_federation(federation("outer"), [], first_epoch("outer"))
        with store.transaction():
            store.insert_federation(federation("inner"), [], first_epoch("inner"))
            raise KeyError("inner")
    assert store.federation("outer") is None
    assert store.federation("inner") is None


def test_a_conflict_inside_a_transaction_leaves_it_usable(store: SqlStore) -> None:
    with store.transaction():
        enrolled(store)
        store.insert_keygen_value("fed", 0, "commitment", 1, 0, "c1")
        with pytest.raises(StoreConflict):
            store.insert_keygen_value("fed", 0, "commitment", 1, 0, "c1")
        with pytest.raises(StoreConflict):  # atomic: the federation row is not kept
            store.insert_federation(
                federation("twice"), [*parties("twice"), parties()[0]], first_epoch("twice")
            )
        store.insert_keygen_value("fed", 0, "commitment", 2, 0, "c2")
    assert store.keygen_values("fed", 0, "commitment") == {(1, 0): "c1", (2, 0): "c2"}
    assert store.federation("twice") is None


def test_another_store_on_the_same_database_sees_committed_rows(database_url: str) -> None:
    first, second = SqlStore(database_url), SqlStore(database_url)
    try:
        with first.transaction():
            enrolled(first)
            assert second.federation("fed") is None
        assert second.federation("fed") == federation()
        numbers = in_threads(6, lambda i: (first, second)[i % 2].insert_round("fed", 1.0, 0.0))
        assert sorted(r.number for r in numbers) == [1, 2, 3, 4, 5, 6]
    finally:
        first.close()
        second.close()


# ---- concurrency ---------------------------------------------------------------------------


def test_concurrent_insert_round_gives_distinct_numbers(store: SqlStore) -> None:
    enrolled(store)

    def open_rounds(_: int) -> list[int]:
        return [store.insert_round("fed", 10.0, 0.0).number for _ in range(5)]

    numbers = [n for batch in in_threads(8, open_rounds) for n in batch]
    assert sorted(numbers) == list(range(1, 41))


def test_concurrent_spend_nonce_succeeds_exactly_once(store: SqlStore) -> None:
    results = in_threads(8, lambda _: store.spend_nonce("key", "same", 1.0))
    assert results.count(True) == 1


def test_transactions_serialise_read_then_write(store: SqlStore) -> None:
    """Each thread reads how many uploads exist and writes the next: only serialised
    transactions make every thread read a different count."""
    enrolled(store)

    def next_upload(_: int) -> None:
        for _ in range(3):
            with store.transaction():
                count = len(store.uploads("fed", 1))
                store.insert_upload(upload(f"c{count:02d}"))

    in_threads(6, next_upload)
    assert [u.client for u in store.uploads("fed", 1)] == [f"c{i:02d}" for i in range(18)]
