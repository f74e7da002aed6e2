"""The member's pure ``endorse``: from the upload records alone (no blob is fetched), may
this member endorse the round's upload set? Every member endorses every round it sees
decrypting, named or not, and at most one set per round: its ledger pin decides."""

from __future__ import annotations

import dataclasses

import pytest

from he_agg.api import paths
from he_agg.api.models import DecryptionRequest
from he_agg.api.states import RoundState
from he_agg.endorsement import upload_set_digest
from keys.ledger import LedgerState, Pin
from keys.verify import UPGRADE_SKEW_SECONDS, EndorseDecision, endorse
from tests.test_member_verify import FED, MEMBER, ROUND, Setup, build_setup


@pytest.fixture(scope="module")
def setup() -> Setup:
    return build_setup()


def _endorse(
    setup: Setup,
    request: DecryptionRequest | None = None,
    *,
    ledger: LedgerState | None = None,
    member: int = MEMBER,
    epoch: int = 0,
) -> EndorseDecision:
    return endorse(
        request or setup.request,
        setup.config,
        ledger or LedgerState(),
        member,
        FED,
        epoch=epoch,
        roster=setup.roster,
    )


def _refused(decision: EndorseDecision, words: str) -> None:
    assert decision.accepted is False
    assert decision.endorsement is None and decision.pin is None
    assert words in decision.reason, decision.reason


def _with(setup: Setup, **changes: object) -> DecryptionRequest:
    return setup.request.model_copy(update=changes)


def _pin(request: DecryptionRequest) -> Pin:
    return Pin(upload_set_digest(request.uploads), request.aggregate_sha256, len(request.uploads))


def test_endorses_the_honest_set_with_its_pin(setup: Setup) -> None:
    decision = _endorse(setup)
    assert decision.accepted, decision.reason
    assert decision.pin == _pin(setup.request)
    statement = decision.endorsement
    assert statement is not None and statement.signature == b""  # the agent signs it
    digest = bytes.fromhex(upload_set_digest(setup.request.uploads))
    assert (statement.federation, statement.epoch, statement.round) == (FED, 0, ROUND)
    assert (statement.upload_set, statement.member) == (digest, MEMBER)


def test_every_member_endorses_named_or_not(setup: Setup) -> None:
    """Member 3 is not in the decryption set {1, 2}; it endorses all the same."""
    decision = _endorse(setup, member=3)
    assert decision.accepted and decision.endorsement is not None
    assert decision.endorsement.member == 3


def test_the_same_set_again_is_endorsed_with_the_recorded_pin(setup: Setup) -> None:
    """Another attempt of the round, the set unchanged: the same endorsement again."""
    pinned = LedgerState().with_pin(ROUND, _pin(setup.request))
    reordered = list(reversed(setup.request.uploads))
    decision = _endorse(setup, _with(setup, attempt=4, uploads=reordered), ledger=pinned)
    assert decision.accepted and decision.pin == pinned.pin(ROUND)


def test_a_round_pinned_to_another_set_is_not_endorsed(setup: Setup) -> None:
    """Pinned by an endorsement, or (an older ledger) by a share: either way, once."""
    pinned = LedgerState().with_pin(ROUND, Pin("00" * 32, "11" * 32, 3))
    _refused(_endorse(setup, ledger=pinned), f"round {ROUND} is pinned to the upload")
    shared = LedgerState().with_share(ROUND, 1, Pin("00" * 32, "11" * 32, 3))
    _refused(_endorse(setup, ledger=shared), "pinned to the upload set 0000000000000000")


def test_endorsing_twice_with_different_sets_is_refused(setup: Setup) -> None:
    first = _endorse(setup)
    assert first.pin is not None
    ledger = LedgerState().with_pin(ROUND, first.pin)  # what the agent records
    two = setup.request.uploads[:2]
    other = _with(setup, uploads=two)
    roster = dataclasses.replace(setup.roster, k_min=2)  # K_min is the roster's
    assert endorse(
        other, setup.config, LedgerState(), MEMBER, FED, epoch=0, roster=roster
    ).accepted  # valid alone
    decision = endorse(other, setup.config, ledger, MEMBER, FED, epoch=0, roster=roster)
    _refused(decision, "(3 uploads) by this member's endorsement or share")


def test_a_pin_with_another_announced_aggregate_still_endorses_the_set(setup: Setup) -> None:
    """An endorsement covers the upload set only; the aggregate is checked at share time."""
    pinned = LedgerState().with_pin(ROUND, _pin(_with(setup, aggregate_sha256="ab" * 32)))
    assert _endorse(setup, ledger=pinned).accepted


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"state": RoundState.PUBLISHED}, "not decrypting"),
        ({"epoch": 1}, "key epoch 1"),
    ],
    ids=["not-decrypting", "other-epoch"],
)
def test_refuses_the_wrong_state_or_epoch(
    setup: Setup, change: dict[str, object], words: str
) -> None:
    _refused(_endorse(setup, _with(setup, **change)), words)


def test_refuses_a_finished_or_legacy_round(setup: Setup) -> None:
    completed = LedgerState().with_pin(ROUND, _pin(setup.request)).with_completed(ROUND)
    _refused(_endorse(setup, ledger=completed), "already decrypted")
    legacy = LedgerState(shares=((ROUND, 1),))
    _refused(_endorse(setup, ledger=legacy), "before upload sets were pinned")


def test_refuses_a_set_with_an_upload_signed_before_the_upgrade_floor(setup: Setup) -> None:
    """A member that joined before endorsements (floor set, keys.ledger) and holds no pin
    for the round: an upload signed before floor − skew may be from a round decrypted then,
    pinned only by its t sharers, so it is not endorsed; a later one is."""
    earliest = min(u.timestamp for u in setup.request.uploads)
    floor = earliest + UPGRADE_SKEW_SECONDS + 1
    decision = _endorse(setup, ledger=LedgerState(floor=floor))
    _refused(decision, f"before this member's upgrade floor {floor}")
    assert _endorse(setup, ledger=LedgerState(floor=earliest + UPGRADE_SKEW_SECONDS)).accepted
    assert _endorse(setup, ledger=LedgerState(floor=earliest - 3600)).accepted


def test_the_server_cannot_move_uploads_past_the_floor(setup: Setup) -> None:
    """The timestamp is under the client's signature: a later one fails it."""
    floor = max(u.timestamp for u in setup.request.uploads) + UPGRADE_SKEW_SECONDS + 1
    moved = [u.model_copy(update={"timestamp": floor}) for u in setup.request.uploads]
    decision = _endorse(setup, _with(setup, uploads=moved), ledger=LedgerState(floor=floor))
    _refused(decision, "not signed by it")


def test_refuses_a_list_outside_k_min_to_k_max_or_not_enrolled(setup: Setup) -> None:
    _refused(_endorse(setup, _with(setup, uploads=setup.request.uploads[:2])), "K_min is 3")
    twice = [*setup.request.uploads, setup.request.uploads[0]]
    _refused(_endorse(setup, _with(setup, uploads=twice)), "'bank-1' twice")
    intruder = setup.record("intruder", setup.upload("intruder"))
    stranger = [*setup.request.uploads, intruder]
    _refused(_endorse(setup, _with(setup, uploads=stranger)), "not an enrolled client")


def test_refuses_a_record_not_signed_by_its_client_for_this_round(setup: Setup) -> None:
    blob = setup.blobs["bank-1"]
    rest = setup.request.uploads[1:]
    forged = setup.record("bank-1", blob, signer="bank-2")
    _refused(_endorse(setup, _with(setup, uploads=[forged, *rest])), "not signed by it")
    elsewhere = setup.record("bank-1", blob, signed_for=paths.update(FED, ROUND + 1, "bank-1"))
    _refused(_endorse(setup, _with(setup, uploads=[elsewhere, *rest])), "was signed for")
    rewritten = setup.record(
        "bank-1",
        blob,
        signed_for=paths.update(FED, ROUND + 1, "bank-1"),
        target=paths.update(FED, ROUND, "bank-1"),
    )
    _refused(_endorse(setup, _with(setup, uploads=[rewritten, *rest])), "not signed by it")
    other_body = setup.request.uploads[0].model_copy(update={"sha256": "00" * 32})
    _refused(_endorse(setup, _with(setup, uploads=[other_body, *rest])), "not signed by it")


def test_a_decision_carries_its_endorsement_exactly_when_accepted() -> None:
    assert EndorseDecision(False, "no").accepted is False
    with pytest.raises(ValueError):
        EndorseDecision(True, "accepted but empty")
    with pytest.raises(ValueError):
        EndorseDecision(False, "refused", pin=Pin("00" * 32, "00" * 32, 3))
