"""Roster changes a party may follow (he_agg.roster): the successor rules, following a
served chain from a pin, the roster that governs an epoch, and the served creation body a
party that pinned a later roster still accepts (``genesis_mismatch``)."""

from __future__ import annotations

import dataclasses

import pytest

from he_agg.api.models import FederationCreate, MemberIn, PartyIn
from he_agg.api.roster_check import genesis_mismatch, roster_for, roster_mismatch
from he_agg.errors import ProtocolError
from he_agg.params import derive_parameters
from he_agg.roster import RosterMember, SignedRoster, follow, roster_for_epoch
from keys.identity import Identity

ADMIN = Identity.generate(0)
OTHER = Identity.generate(0)
KEYS = {i: Identity.generate(i).public for i in range(1, 6)}
PARAMS = derive_parameters("chain-test", k_max=4, committee_max=5, value_bits=12, proofs=False)


def _member(index: int, name: str | None = None) -> RosterMember:
    k = KEYS[index]
    return RosterMember(name or f"m{index}", index, k.signing_key.hex(), k.encryption_key.hex())


def _body() -> FederationCreate:
    return FederationCreate(
        id="chain",
        parameters=PARAMS.to_dict(),
        threshold=2,
        k_min=1,
        clients=[PartyIn(name="bank", signing_key="ab" * 32)],
        members=[
            MemberIn(name=m.name, index=m.index, signing_key=m.signing_key,
                     encryption_key=m.encryption_key)
            for m in map(_member, (1, 2, 3))
        ],
    )  # fmt: skip


GENESIS = SignedRoster.sign(roster_for(_body(), ADMIN.public.signing_key.hex()), ADMIN.sign)


def _next(old: SignedRoster, sign: object = ADMIN.sign, **change: object) -> SignedRoster:
    fields: dict[str, object] = {"version": old.roster.version + 1, "epoch": old.roster.epoch + 1}
    fields.update(change)
    return SignedRoster.sign(dataclasses.replace(old.roster, **fields), sign)  # type: ignore[arg-type]


def test_a_committee_change_follows() -> None:
    new = _next(GENESIS, members=(_member(1), _member(2), _member(4)), threshold=3)
    assert new.check_successor_of(GENESIS).threshold == 3


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"epoch": 0}, "does not follow"),  # every change is a new epoch
        ({"version": 1}, "does not follow"),
        ({"parameters": "00" * 32}, "parameter set"),
        ({"mode": "plaintext"}, "mode"),
        ({"federation": "other"}, "another federation"),
        ({"members": (_member(1), _member(2), _member(3, "m-new"))}, "index 3 belonged"),
        ({"members": (_member(1), _member(2), dataclasses.replace(_member(4), name="m3"))}, "m3"),
        ({"clients": (dataclasses.replace(GENESIS.roster.clients[0], signing_key="cd" * 32),)},
         "bank"),
    ],
)  # fmt: skip
def test_a_successor_breaking_a_rule_is_refused(change: dict[str, object], phrase: str) -> None:
    with pytest.raises(ProtocolError, match=phrase):
        _next(GENESIS, **change).check_successor_of(GENESIS)


def test_a_successor_signed_by_another_key_is_refused() -> None:
    with pytest.raises(ProtocolError, match="another admin"):
        _next(GENESIS, OTHER.sign, admin_key=OTHER.public.signing_key.hex()).check_successor_of(
            GENESIS
        )
    forged = SignedRoster(_next(GENESIS).roster, b"\x00" * 64)
    with pytest.raises(Exception, match="not signed by its admin"):
        forged.check_successor_of(GENESIS)


def test_follow_walks_the_chain_and_skips_what_it_has() -> None:
    v2 = _next(GENESIS, members=(_member(1), _member(2), _member(4)))
    v3 = _next(v2, threshold=3)
    assert follow(GENESIS, [GENESIS, v2, v3]) == v3
    assert follow(v2, [GENESIS, v2, v3]) == v3  # a party pinned at v2 starts there
    assert follow(v3, [GENESIS, v2]) == v3  # a chain withheld: the pin stays
    bad = _next(v2, OTHER.sign)  # claims to follow v2 with another signature
    with pytest.raises(ProtocolError):
        follow(GENESIS, [GENESIS, v2, bad])


def test_the_roster_of_an_epoch_is_the_newest_that_starts_at_or_before_it() -> None:
    v2 = _next(GENESIS, epoch=4)  # epochs 1-3 were re-keys under the genesis roster
    chain = [GENESIS, v2]
    assert [roster_for_epoch(chain, e) for e in (0, 3, 4, 9)] == [GENESIS, GENESIS, v2, v2]
    late = _next(GENESIS, epoch=2)
    assert roster_for_epoch([late], 1) is None


def test_a_party_pinned_at_a_later_roster_accepts_the_creation_body() -> None:
    body = _body().model_copy(update={"roster": GENESIS.to_json()})
    v2 = _next(GENESIS, members=(_member(1), _member(2), _member(4)))
    assert genesis_mismatch(body, GENESIS) is None
    assert genesis_mismatch(body, v2) is None
    stranger = SignedRoster.sign(
        dataclasses.replace(GENESIS.roster, admin_key=OTHER.public.signing_key.hex()), OTHER.sign
    )
    assert "pinned admin" in (genesis_mismatch(body, stranger) or "")
    other_genesis = SignedRoster.sign(dataclasses.replace(GENESIS.roster, k_min=2), ADMIN.sign)
    assert "pinned one" in (genesis_mismatch(body, other_genesis) or "")
    edited = body.model_copy(update={"threshold": 3})
    assert "threshold" in (genesis_mismatch(edited, v2) or "")
    assert genesis_mismatch(body.model_copy(update={"roster": None}), v2) == "it has no roster"


def test_the_roster_shows_the_proofs_setting_and_older_rosters_keep_their_bytes() -> None:
    assert GENESIS.roster.proofs is False  # PARAMS was derived with proofs=False
    assert '"proofs":false' in GENESIS.roster.canonical().decode()
    legacy = dataclasses.replace(GENESIS.roster, proofs=None)  # signed before proofs existed
    assert "proofs" not in legacy.canonical().decode()
    again = SignedRoster.from_json(SignedRoster.sign(legacy, ADMIN.sign).to_json())
    assert again.roster.proofs is None and again.verify() == legacy
    with pytest.raises(ProtocolError, match="parameter set or the mode"):
        _next(GENESIS, proofs=True).check_successor_of(GENESIS)


def test_a_served_body_whose_proofs_setting_differs_is_refused() -> None:
    body = _body().model_copy(update={"roster": GENESIS.to_json()})
    flipped = dataclasses.replace(GENESIS.roster, proofs=True)
    assert "proofs" in (roster_mismatch(body, flipped) or "")
    assert roster_mismatch(body, dataclasses.replace(GENESIS.roster, proofs=None)) is None
