"""Sample rows and small helpers shared by the store's tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from he_agg.api.states import PartyRole
from he_agg.server.store import EpochRow, FederationRow, PartyRow, Store, UploadRow

__all__ = [
    "CONFIG",
    "ROSTER",
    "enrolled",
    "federation",
    "first_epoch",
    "in_threads",
    "parties",
    "upload",
]

T = TypeVar("T")
ROSTER = '{"roster": {"version": 1, "members": ["m1", "m2"]}, "signature": "5a"}'
CONFIG = {
    "id": "fed",
    "threshold": 2,
    "members": ["m1", "m2"],
    "params": {"n": 8192},
    "roster": ROSTER,
}


def federation(federation_id: str = "fed") -> FederationRow:
    return FederationRow(id=federation_id, config=CONFIG, created=1714000000.123456)


def first_epoch(federation_id: str = "fed") -> EpochRow:
    return EpochRow(federation_id, 0, ROSTER, created=1714000000.123456)


def parties(federation_id: str = "fed") -> list[PartyRow]:
    return [
        PartyRow(federation_id, "alice", PartyRole.CLIENT, "a1" * 32),
        PartyRow(federation_id, "m1", PartyRole.MEMBER, "b1" * 32, "c1" * 32, 1),
        PartyRow(federation_id, "m2", PartyRole.MEMBER, "b2" * 32, "c2" * 32, 2),
    ]


def upload(client: str, sha: str = "d" * 64, number: int = 1) -> UploadRow:
    return UploadRow(
        federation="fed",
        round=number,
        client=client,
        sha256=sha,
        size=5_000_000_000,  # over 2^32: the column must be 64-bit
        signature="e" * 128,
        timestamp=1714000000,
        nonce=f"nonce-{client}",
        target=f"/v1/federations/fed/rounds/{number}/updates/{client}",
        manifest='{"layers": [3, 4]}',
        received=1714000001.5,
    )


def enrolled(store: Store) -> Store:
    store.insert_federation(federation(), parties(), first_epoch())
    return store


def in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` in ``count`` threads that start together; results in order."""
    barrier = threading.Barrier(count)

    def started(i: int) -> T:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(started, range(count)))
