"""Long polls: a federation's activity as a tag, and waiting until it changes.

A party that waits for something (a member for uploads, endorsements or a decryption set,
a client for its model) asks ``GET …/watch?since=TAG&wait=S`` instead of polling every
tenth of a second: the answer comes as soon as the federation's activity tag differs from
``TAG``, or after S seconds with the same tag. The tag is a digest of what parties act on:
the rounds (state, uploads, attempt, set), the key epochs and the DKG, and each decrypting
round's endorsements and shares. It is computed from the store, so a write made by another
replica is seen too: this process wakes at once on its own commits (the store's
``on_commit``) and re-reads at least every ``RECHECK`` seconds for the others'.
"""

from __future__ import annotations

import hashlib
import time

from starlette.concurrency import run_in_threadpool

from he_agg.api.states import RoundState
from he_agg.server.deps import AppState

__all__ = ["RECHECK", "activity_tag", "wait_for_change"]

RECHECK = 1.0  # seconds between re-reads while waiting (writes by other replicas)


def activity_tag(state: AppState, federation_id: str) -> str:
    """A digest of everything a party of the federation acts on (the module docstring)."""
    federation = state.federations.get(federation_id)  # fresh: epochs change
    digest = hashlib.sha256()
    rounds = state.rounds.list_rounds(federation.id, None)
    for status in rounds:
        digest.update(status.model_dump_json().encode())
        if status.state == RoundState.DECRYPTING:
            endorsed = state.store.endorsements(federation.id, status.number)
            shares = state.store.shares(federation.id, status.number, status.attempt)
            named = sorted((member, listed) for member, (listed, _) in endorsed.items())
            digest.update(f"e{named}s{sorted(s.member for s in shares)}".encode())
    for epoch in state.keygen.epochs(federation):
        digest.update(epoch.model_dump_json().encode())
    digest.update(state.keygen.status(federation, None).model_dump_json().encode())
    return digest.hexdigest()[:32]


async def wait_for_change(
    state: AppState, federation_id: str, since: str | None, wait: float
) -> str:
    """The activity tag once it differs from ``since``, or after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        ticket = state.changes.ticket()  # before the read: a commit during it wakes the wait
        tag = await run_in_threadpool(activity_tag, state, federation_id)
        left = deadline - time.monotonic()
        if since is None or tag != since or left <= 0:
            return tag
        await state.changes.wait(min(RECHECK, left), ticket)
