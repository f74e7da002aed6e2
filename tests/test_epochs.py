"""Key epochs and roster changes without downtime, end to end: a real server under uvicorn,
committee agents in their own processes, clients over loopback HTTP.

τ = 3, so ten rounds need at least four key epochs: the next epoch's DKG starts in the
background while rounds go on, rounds opened after its key is ready use it, and every
member destroys the secrets of an epoch once it is retired. Then one member is removed
and another added (a new signed roster, a new epoch), and the model is checked after
each change against numpy FedAvg, to the parameter set's error bound.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clients.harness.local import LocalFederation
from clients.participant import Participant
from he_agg.api.states import RoundState
from he_agg.errors import ServiceError
from he_agg.packing import flatten
from he_agg.params import derive_parameters
from keys.agent import wait
from keys.dkg import KEY_STATEMENT_FILE, MEMBER_KEY, epoch_dir

CLIENTS = ["bank-a", "bank-b", "bank-c"]
TAU = 3


def _update(seed: int) -> tuple[dict[str, Any], float]:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(6, 5)), "b": rng.normal(size=5)}, float(rng.integers(5, 50))


def _open(fed: LocalFederation, timeout: float = 120.0) -> int:
    """Open the next round; while the current epoch's τ is promised to open rounds and the
    next epoch's DKG runs, the server answers 409 and the admin retries (no round fails)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fed.admin_api().open_round(fed.federation, deadline_seconds=120).number
        except ServiceError as exc:
            if exc.status != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _round(fed: LocalFederation, clients: dict[str, Participant], seed: int) -> int:
    """One round with every client; the published model must be numpy's FedAvg."""
    number = _open(fed)
    updates = [_update(seed * 10 + i) for i in range(len(clients))]
    for client, (update, samples) in zip(clients.values(), updates, strict=True):
        client.submit(update, samples, round=number)
    model = next(iter(clients.values())).wait_for_model(number, timeout=120)
    total = sum(n for _, n in updates)
    expected = sum(flatten(u)[0] * n for u, n in updates) / total
    assert fed.params is not None
    assert np.abs(flatten(model)[0] - expected).max() <= fed.params.error_bound(2) * 2 / total
    status = fed.admin_api().round(fed.federation, number)
    assert status.state == RoundState.PUBLISHED
    return status.epoch


def _took_part(fed: LocalFederation, member: int, epoch: int) -> bool:
    """The member signed that epoch's key statement (kept after its secrets are destroyed)."""
    return (epoch_dir(fed.member_state(member), epoch) / KEY_STATEMENT_FILE).exists()


def _holds_key(fed: LocalFederation, member: int, epoch: int) -> bool:
    return (epoch_dir(fed.member_state(member), epoch) / MEMBER_KEY).exists()


@pytest.fixture
def fed(tmp_path: Path) -> Any:
    params = derive_parameters(
        "epochs-test", k_max=4, committee_max=4, value_bits=12, tau=TAU, proofs=False
    )
    federation = LocalFederation(
        tmp_path, "epochs", CLIENTS, params=params, members=3, threshold=2, share_timeout=30
    )
    with federation:
        yield federation


def test_ten_rounds_past_tau_then_a_member_replaced(fed: LocalFederation) -> None:
    clients = {name: fed.participant(name) for name in CLIENTS}
    admin = fed.admin_api()

    # ---- ten rounds with τ = 3: re-keying in the background, no round lost ----------------
    epochs = [_round(fed, clients, seed) for seed in range(10)]
    assert epochs == sorted(epochs)  # rounds move to a newer key, never back
    assert epochs[-1] >= 3  # ten decryptions at τ = 3 need four keys
    listed = admin.epochs(fed.federation)
    assert all(e.decryptions_used <= TAU for e in listed)
    assert [r for r in range(1, 11) if admin.round(fed.federation, r).attempt != 1] == []
    # every epoch before the current one is retired, and every member destroyed its key
    old = [e.epoch for e in listed if e.epoch < epochs[-1]]
    assert wait(lambda: all(e.retired for e in admin.epochs(fed.federation) if e.epoch in old), 30)
    assert wait(lambda: not any(_holds_key(fed, m, e) for m in (1, 2, 3) for e in old), 30)
    # every member took part in the last round's epoch (its key statement stays; the key may
    # already be gone if the member spent that epoch's τ in three shares)
    statements = [
        epoch_dir(fed.member_state(m), epochs[-1]) / KEY_STATEMENT_FILE for m in (1, 2, 3)
    ]
    assert all(path.exists() for path in statements)

    # ---- remove member 3, add member 4: a new roster, a new epoch ---------------------------
    before = admin.federation(fed.federation).epoch
    signed = fed.change_committee(remove=[3], add=[4])
    assert signed.roster.epoch > before
    assert [m.index for m in signed.roster.members] == [1, 2, 4]
    fed.wait_for_epoch(signed.roster.epoch)
    changed = [_round(fed, clients, seed) for seed in (20, 21)]
    assert changed[0] >= signed.roster.epoch  # the new committee's key (or a re-key of it)
    assert all(c.roster is not None and c.roster.version == 2 for c in clients.values())
    # the removed member took no part in the new epoch and destroys its old keys
    assert not _holds_key(fed, 3, signed.roster.epoch)
    assert _took_part(fed, 4, changed[-1]) and not _took_part(fed, 3, changed[-1])
    assert wait(lambda: not any(_holds_key(fed, 3, e) for e in range(changed[-1] + 1)), 30)

    # ---- t changes too: 3 of {1, 2, 4} ------------------------------------------------
    stricter = fed.change_committee(threshold=3)
    fed.wait_for_epoch(stricter.roster.epoch)
    assert _round(fed, clients, 30) >= stricter.roster.epoch
    last = admin.round(fed.federation, 13)
    assert sorted(last.decryption_set) == [1, 2, 4]  # t = 3 of the new committee
