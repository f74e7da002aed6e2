"""The server's key-epoch state machine, on both stores, driven directly (no HTTP): re-keys
and roster changes, the switch to a ready epoch, retirement, the automatic re-key as τ
runs low, the 409 while τ is promised to open rounds, and every roster change the
server must refuse with a 422 that changes nothing.

A DKG's messages are stood in for by rows in the keygen table (the phase counts them); the
messages themselves are checked by the DKG tests and, end to end, by tests/test_epochs.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from he_agg.api.models import EpochRequest, FederationCreate, MemberIn, PartyIn
from he_agg.api.roster_check import roster_for
from he_agg.api.states import KeygenPhase, RoundState
from he_agg.errors import ServiceError
from he_agg.params import derive_parameters
from he_agg.roster import Roster, RosterClient, RosterMember, SignedRoster
from he_agg.server.config import Settings
from he_agg.server.deps import AppState
from he_agg.server.federations import Federation
from he_agg.server.keygen import COMMITMENT, PK_SHARE, SHAMIR, STATEMENT
from he_agg.server.store import FileBlobStore, ShareRow, SqlStore
from keys.identity import Identity

FED = "epoch-fed"
TAU = 3
PARAMS = derive_parameters(
    "server-epochs", k_max=4, committee_max=4, value_bits=12, tau=TAU, proofs=False
)
ADMIN = Identity.generate(0)
OTHER_ADMIN = Identity.generate(0)
MEMBERS = {i: Identity.generate(i) for i in (1, 2, 3, 4, 5)}
CLIENTS = {name: Identity.generate(0) for name in ("bank-1", "bank-2", "bank-3")}


def _member(index: int) -> RosterMember:
    public = MEMBERS[index].public
    return RosterMember(f"m{index}", index, public.signing_key.hex(), public.encryption_key.hex())


def _client(name: str) -> RosterClient:
    return RosterClient(name, CLIENTS[name].public.signing_key.hex())


def _body() -> FederationCreate:
    body = FederationCreate(
        id=FED,
        parameters=PARAMS.to_dict(),
        threshold=2,
        k_min=2,
        clients=[PartyIn(name=c.name, signing_key=c.signing_key) for c in map(_client, CLIENTS)],
        members=[
            MemberIn(name=m.name, index=m.index, signing_key=m.signing_key,
                     encryption_key=m.encryption_key)
            for m in map(_member, (1, 2, 3))
        ],
    )  # fmt: skip
    signed = SignedRoster.sign(roster_for(body, _admin_key()), ADMIN.sign)
    return body.model_copy(update={"roster": signed.to_json()})


def _admin_key() -> str:
    return ADMIN.public.signing_key.hex()


@pytest.fixture
def state(database_url: str, tmp_path: Path) -> Iterator[AppState]:
    store = SqlStore(database_url)
    app = AppState.build(Settings(data_dir=tmp_path), store, FileBlobStore(tmp_path / "blobs"))
    app.federations.create(_body(), _admin_key())
    yield app
    store.close()


def _fed(state: AppState) -> Federation:
    return state.federations.get(FED)


def _make_ready(state: AppState, epoch: int) -> None:
    """Stand in for a finished DKG of ``epoch``: every message counted, the key published."""
    members = _fed(state).at(epoch).member_indices
    for sender in members:
        for kind in (COMMITMENT, PK_SHARE, STATEMENT):
            state.store.insert_keygen_value(FED, epoch, kind, sender, 0, "x")
        for recipient in members:
            state.store.insert_keygen_value(FED, epoch, SHAMIR, sender, recipient, "x")
    state.store.set_public_key(FED, epoch, state.blobs.put(b"key of epoch %d" % epoch))
    assert state.keygen.phase(_fed(state), epoch) == KeygenPhase.READY


def _successor(newest: Roster, sign: Callable[[bytes], bytes] = ADMIN.sign, **change: Any) -> str:
    roster = dataclasses.replace(newest, version=newest.version + 1, **change)
    return SignedRoster.sign(roster, sign).to_json()


def _newest_roster(state: AppState) -> Roster:
    roster = _fed(state).newest.roster
    assert roster is not None
    return roster


def _request(state: AppState, roster: str | None = None) -> Federation:
    fed = _fed(state)
    ready = state.keygen.phase(fed, fed.newest.number) == KeygenPhase.READY
    return state.federations.request_epoch(fed, EpochRequest(roster=roster), _admin_key(), ready)


def _open(state: AppState) -> int:
    return state.rounds.open(_fed(state), 60).number


# ---- re-keys, switching, retirement ---------------------------------------------------------


def test_a_new_federation_has_epoch_0_current(state: AppState) -> None:
    [only] = state.keygen.epochs(_fed(state))
    assert (only.epoch, only.current, only.retired, only.phase) == (0, True, False, "commit")
    assert state.federations.rosters(_fed(state)) == [_body().roster]


def test_a_rekey_waits_for_the_running_dkg(state: AppState) -> None:
    with pytest.raises(ServiceError) as refused:
        _request(state)
    assert refused.value.status == 409 and "still running" in str(refused.value)
    assert len(_fed(state).epoch_rows) == 1


def test_rounds_use_the_current_epoch_until_the_next_key_is_ready(state: AppState) -> None:
    _make_ready(state, 0)
    first = _open(state)
    _request(state)  # epoch 1 under the same roster; its DKG runs in the background
    second = _open(state)
    assert [state.store.round(FED, n).epoch for n in (first, second)] == [0, 0]  # type: ignore[union-attr]
    _make_ready(state, 1)
    state.rounds.settle_epochs(_fed(state))
    assert _fed(state).epoch == 1
    third = _open(state)
    assert state.rounds.status(FED, third).epoch == 1
    # epoch 0 keeps its open rounds: not retired until they finish
    assert not _fed(state).at(0).row.retired
    for number in (first, second):
        state.rounds.close(_fed(state), number)  # no uploads: aborted below K_min
    state.rounds.settle_epochs(_fed(state))
    listed = {e.epoch: e for e in state.keygen.epochs(_fed(state))}
    assert listed[0].retired and listed[1].current and not listed[1].retired
    assert state.store.unsettled_epochs() == []


def test_tau_running_low_starts_the_next_epoch_and_no_round_is_promised_past_it(
    state: AppState,
) -> None:
    _make_ready(state, 0)
    _open(state)  # τ left after the open rounds: 2 > ⌈3/4⌉ = 1
    assert len(_fed(state).epoch_rows) == 1
    _open(state)  # 1 left: the DKG of epoch 1 starts
    assert [e.epoch for e in state.keygen.epochs(_fed(state))] == [0, 1]
    _open(state)  # the last decryption of epoch 0, promised to this round
    with pytest.raises(ServiceError) as refused:
        _open(state)
    assert refused.value.status == 409 and "epoch 1's key is being generated" in str(refused.value)
    assert len(state.store.rounds(FED)) == 3  # the refused open stored nothing
    _make_ready(state, 1)
    state.rounds.settle_epochs(_fed(state))
    assert state.rounds.status(FED, _open(state)).epoch == 1


# ---- roster changes -------------------------------------------------------------------------


def test_a_roster_change_enrols_the_new_member_for_a_new_epoch(state: AppState) -> None:
    old = _newest_roster(state)
    members = (*old.members[:2], _member(4))  # m3 out, m4 in
    fed = _request(state, _successor(old, epoch=1, members=members))
    assert (fed.epoch, fed.newest.number, fed.newest.member_indices) == (0, 1, [1, 2, 4])
    new_key = MEMBERS[4].public.signing_key.hex()
    assert state.federations.party(fed, new_key) is not None
    assert len(state.federations.rosters(fed)) == 2
    # the keygen of epoch 1 takes no message from the removed member
    with pytest.raises(ServiceError) as refused:
        state.keygen.add_commitment(fed, 3, "00" * 32, "00" * 64)
    assert refused.value.status == 404


def test_a_roster_change_supersedes_an_unfinished_epoch(state: AppState) -> None:
    old = _newest_roster(state)
    _request(state, _successor(old, epoch=1, members=(*old.members, _member(4))))
    stuck = _newest_roster(state)
    fed = _request(state, _successor(stuck, epoch=2, members=(*old.members[:2], _member(4))))
    listed = {e.epoch: e for e in state.keygen.epochs(fed)}
    assert listed[1].retired and not listed[2].retired and fed.newest.number == 2


def test_a_client_outside_the_rounds_epoch_cannot_upload(state: AppState) -> None:
    _make_ready(state, 0)
    old = _newest_roster(state)
    clients = (*old.clients[:2],)  # bank-3 leaves
    _request(state, _successor(old, epoch=1, clients=clients))
    _make_ready(state, 1)
    state.rounds.settle_epochs(_fed(state))
    number = _open(state)
    with pytest.raises(ServiceError) as refused:
        state.intake.require_enrolled(_fed(state), number, "bank-3")
    assert refused.value.status == 403 and "key epoch 1" in str(refused.value)
    state.intake.require_enrolled(_fed(state), number, "bank-1")


def _bad_changes(old: Roster) -> dict[str, tuple[str, str]]:
    """name → (a roster change the server must refuse, a phrase of its 422)."""
    three = old.members
    swapped = dataclasses.replace(three[2], signing_key=MEMBERS[5].public.signing_key.hex())
    stolen_index = dataclasses.replace(_member(4), index=3)
    return {
        "another admin": (_successor(old, OTHER_ADMIN.sign, epoch=1), "admin"),
        "forged signature": (
            _successor(old, epoch=1).replace(
                SignedRoster.from_json(_successor(old, epoch=1)).signature.hex(), "00" * 64
            ),
            "signed",
        ),
        "same version": (
            SignedRoster.sign(dataclasses.replace(old, epoch=1), ADMIN.sign).to_json(),
            "does not follow",
        ),
        "same epoch": (_successor(old, epoch=0), "does not follow"),
        "keys changed": (_successor(old, epoch=1, members=(*three[:2], swapped)), "new name"),
        "index reused": (
            _successor(old, epoch=1, members=(*three[:2], stolen_index)),
            "index",
        ),
        "parameters": (_successor(old, epoch=1, parameters="ab" * 32), "parameter set"),
        "t above n": (_successor(old, epoch=1, threshold=4), "threshold"),
        "k_min above the clients": (_successor(old, epoch=1, k_min=4), "k_min"),
        "committee too large": (
            _successor(old, epoch=1, members=tuple(map(_member, (1, 2, 3, 4, 5)))),
            "noise",
        ),
        "not json": ("{", "roster"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "another admin",
        "forged signature",
        "same version",
        "same epoch",
        "keys changed",
        "index reused",
        "parameters",
        "t above n",
        "k_min above the clients",
        "committee too large",
        "not json",
    ],
)
def test_a_bad_roster_change_is_422_and_changes_nothing(state: AppState, case: str) -> None:
    roster, phrase = _bad_changes(_newest_roster(state))[case]
    before = (_fed(state).epoch_rows, state.store.parties(FED))
    with pytest.raises(ServiceError) as refused:
        _request(state, roster)
    assert refused.value.status == 422
    assert phrase in str(refused.value)
    assert (_fed(state).epoch_rows, state.store.parties(FED)) == before


def test_only_round_states_that_finish_free_an_epoch(state: AppState) -> None:
    """A decrypting round keeps its epoch alive too (its shares are still to come)."""
    _make_ready(state, 0)
    number = _open(state)
    row = state.store.round(FED, number)
    assert row is not None
    state.store.save_round(dataclasses.replace(row, state=RoundState.DECRYPTING))
    _request(state)
    _make_ready(state, 1)
    state.rounds.settle_epochs(_fed(state))
    assert _fed(state).epoch == 1 and not _fed(state).at(0).row.retired


def test_the_server_warns_on_every_start_about_a_federation_without_proofs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A parameter set without proofs (benchmarks, trusted clients) is legal, and said
    aloud each time the server starts."""
    from fastapi.testclient import TestClient

    from he_agg.server.app import create_app

    settings = Settings(data_dir=tmp_path, admin_keys=[_admin_key()])
    first = create_app(settings)
    first.state.he_agg.federations.create(_body(), _admin_key())  # PARAMS: proofs=False
    first.state.he_agg.store.close()
    logger = logging.getLogger("he_agg")  # the server's JSON logs do not propagate
    for _ in range(2):  # two starts of the server on the same data folder
        app = create_app(settings)  # (re)configures the he_agg logger's handlers
        caplog.clear()
        logger.addHandler(caplog.handler)
        try:
            with TestClient(app):
                pass
        finally:
            logger.removeHandler(caplog.handler)
        warned = [r for r in caplog.records if "without proofs" in r.getMessage()]
        assert [getattr(r, "federation", None) for r in warned] == [FED]


def test_a_server_restart_does_not_count_as_members_silence(
    database_url: str, tmp_path: Path
) -> None:
    """Share deadlines run only while the server is up: a set named before an outage gets
    a full timeout after the restart before it is replaced (which would spend τ)."""
    store = SqlStore(database_url)
    blobs = FileBlobStore(tmp_path / "blobs")
    before = AppState.build(Settings(data_dir=tmp_path), store, blobs)
    before.federations.create(_body(), _admin_key())
    _make_ready(before, 0)
    number = before.rounds.open(_fed(before), 60).number
    row = store.round(FED, number)
    assert row is not None
    timeout = _fed(before).spec.share_timeout_seconds
    named = dataclasses.replace(
        row,
        state=RoundState.DECRYPTING,
        attempt=1,
        decryption_set=(1, 2),
        attempt_started=time.time() - 10 * timeout,  # named long before the outage
        aggregate="00" * 32,
    )
    store.save_round(named)
    store.count_decryption(FED, 0)  # naming the set spent one decryption of τ
    for member in (1, 2, 3):  # a quorum endorsed: only the shares are awaited
        store.insert_endorsement(FED, number, member, "ab" * 32, "{}")
    after = AppState.build(Settings(data_dir=tmp_path), store, blobs)  # the restart
    after.rounds.tick(time.time() + timeout / 2)
    still = store.round(FED, number)
    assert still is not None and (still.state, still.attempt) == (RoundState.DECRYPTING, 1)
    assert _fed(after).current.row.decryptions_used == 1  # not spent again
    after.rounds.tick(after.rounds.up_since + timeout + 1)  # silent while the server was up
    row = store.round(FED, number)
    assert row is not None and row.state == RoundState.ABORTED  # only member 3 is left
    assert row.reason is not None and "answer" in row.reason
    store.close()


@pytest.mark.parametrize("shared", [False, True])
def test_an_attempt_that_released_no_share_is_not_counted_against_tau(
    state: AppState, shared: bool
) -> None:
    """A set is counted against τ when it is named; if it is replaced without a single
    share having reached the server (nothing can have leaked through it), the count is
    given back. One share stored, and the attempt stays counted."""
    _make_ready(state, 0)
    number = state.rounds.open(_fed(state), 60).number
    row = state.store.round(FED, number)
    assert row is not None
    timeout = _fed(state).spec.share_timeout_seconds
    started = time.time()
    state.store.save_round(
        dataclasses.replace(
            row,
            state=RoundState.DECRYPTING,
            attempt=1,
            decryption_set=(1, 2),
            attempt_started=started,
            aggregate="00" * 32,
        )
    )
    state.store.count_decryption(FED, 0)
    for member in (1, 2, 3):
        state.store.insert_endorsement(FED, number, member, "ab" * 32, "{}")
    if shared:
        state.store.insert_share(ShareRow(FED, number, 1, 1, state.blobs.put(b"a share")))
    state.rounds.tick(max(started, state.rounds.up_since) + timeout + 1)
    after = state.store.round(FED, number)
    assert after is not None
    used = _fed(state).current.row.decryptions_used
    if shared:  # member 2 was silent: {1, 3} is named, a second attempt; both count
        assert (after.state, after.attempt, after.decryption_set, used) == (
            RoundState.DECRYPTING,
            2,
            (1, 3),
            2,
        )
    else:  # both silent, only member 3 is left: aborted, and the empty attempt given back
        assert (after.state, after.attempt, used) == (RoundState.ABORTED, 1, 0)
