"""The core of endorsements: the quorum size and why two quorums cannot disagree, the signed
bytes (every field bound, domain-separated), the JSON round trip, and who counts."""

from __future__ import annotations

import hashlib
import itertools
from types import SimpleNamespace

import pytest

from he_agg.endorsement import Endorsement, count_valid, quorum, upload_set_digest
from he_agg.errors import ProtocolError, SignatureError
from he_agg.roster import Roster, RosterMember
from keys.identity import Identity

MEMBERS = {i: Identity.generate(i) for i in (1, 2, 3, 4)}
SET = bytes(range(32))
OTHER_SET = bytes(32)


def _roster(members: tuple[int, ...] = (1, 2, 3, 4), threshold: int = 2) -> Roster:
    return Roster(
        federation="fed",
        version=1,
        epoch=0,
        parameters="00",
        mode="ckks",
        threshold=threshold,
        k_min=1,
        k_max=8,
        clients=(),
        members=tuple(
            RosterMember(f"m{i}", i, MEMBERS[i].public.signing_key.hex(), "00" * 32)
            for i in members
        ),
        admin_key="00" * 32,
    )


def _signed(member: int, upload_set: bytes = SET, signer: int | None = None) -> Endorsement:
    return Endorsement("fed", 0, 7, upload_set, member).signed(MEMBERS[signer or member].sign)


# ---- the quorum --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "t", "q"), [(3, 2, 3), (4, 2, 3), (5, 3, 4), (5, 2, 4), (1, 1, 1)])
def test_quorum_sizes(n: int, t: int, q: int) -> None:
    assert quorum(n, t) == q


def test_any_two_quorums_share_t_members_so_one_honest_one() -> None:
    """Exhaustively for small committees: q ≤ n (reachable), and two q-subsets always
    share ≥ t members, more than the t−1 that may be corrupt."""
    for n in range(1, 9):
        for t in range(1, n + 1):
            q = quorum(n, t)
            assert t <= q <= n
            assert (
                min(
                    len(set(a) & set(b))
                    for a, b in itertools.product(itertools.combinations(range(n), q), repeat=2)
                )
                >= t
            ), (n, t)
            assert t - 1 < q  # the corrupt members alone never make a quorum


@pytest.mark.parametrize(("n", "t"), [(3, 0), (2, 3)])
def test_quorum_refuses_a_threshold_outside_1_to_n(n: int, t: int) -> None:
    with pytest.raises(ValueError):
        quorum(n, t)


# ---- the statement -----------------------------------------------------------------------


def test_every_field_is_in_the_signed_bytes() -> None:
    base = Endorsement("fed", 0, 7, SET, 1)
    changed = [
        Endorsement("fed2", 0, 7, SET, 1),
        Endorsement("fed", 1, 7, SET, 1),
        Endorsement("fed", 0, 8, SET, 1),
        Endorsement("fed", 0, 7, OTHER_SET, 1),
        Endorsement("fed", 0, 7, SET, 2),
    ]
    assert base.message().startswith(b"he-agg/endorsement/v1\x00")
    assert len({base.message(), *(e.message() for e in changed)}) == 6


def test_a_signed_endorsement_round_trips_and_verifies() -> None:
    endorsement = _signed(1)
    again = Endorsement.from_bytes(endorsement.to_bytes())
    assert again == endorsement
    again.verify(MEMBERS[1].public.signing_key)
    with pytest.raises(SignatureError):
        again.verify(MEMBERS[2].public.signing_key)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"federation": "fed"}',
        b'{"federation":"fed","epoch":0,"round":"7","upload_set":"00","member":1,"signature":""}',
        b'{"federation":"fed","epoch":true,"round":7,"upload_set":"'
        + b"00" * 32
        + b'","member":1,"signature":""}',
        b'{"federation":"fed","epoch":0,"round":7,"upload_set":"00","member":1,"signature":""}',
        b'{"federation":"fed","epoch":0,"round":7,"upload_set":"'
        + b"00" * 32
        + b'","member":-1,"signature":""}',
    ],
    ids=["junk", "list", "missing", "string-round", "bool-epoch", "short-set", "negative"],
)
def test_anything_else_is_not_an_endorsement(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="not an endorsement"):
        Endorsement.from_bytes(body)


def test_the_set_digest_reads_client_and_sha256_only_in_any_order() -> None:
    a = SimpleNamespace(client="bank-1", sha256="11" * 32, size=5)
    b = SimpleNamespace(client="bank-2", sha256="22" * 32, size=6)
    digest = upload_set_digest([a, b])
    assert digest == upload_set_digest([b, a])
    assert digest == upload_set_digest([a, SimpleNamespace(client="bank-2", sha256="22" * 32)])
    assert digest != upload_set_digest([a])
    # the definition members' ledgers already store: sha256(label ‖ sorted pairs as JSON)
    pairs = f'[["bank-1","{"11" * 32}"],["bank-2","{"22" * 32}"]]'.encode()
    assert digest == hashlib.sha256(b"he-agg/upload-set/v1\0" + pairs).hexdigest()


# ---- who counts --------------------------------------------------------------------------


def _count(endorsements: list[Endorsement], roster: Roster | None = None) -> set[int]:
    return count_valid(endorsements, roster or _roster(), "fed", 0, 7, SET)


def test_valid_endorsements_of_this_set_count_once_each() -> None:
    assert _count([_signed(1), _signed(2), _signed(3)]) == {1, 2, 3}
    assert _count([_signed(2), _signed(2)]) == {2}


def test_what_does_not_count() -> None:
    forged = _signed(3, signer=2)  # a corrupt member signing in another's name
    other_set = _signed(4, OTHER_SET)
    other_round = Endorsement("fed", 0, 8, SET, 4).signed(MEMBERS[4].sign)
    other_fed = Endorsement("fed2", 0, 7, SET, 4).signed(MEMBERS[4].sign)
    other_epoch = Endorsement("fed", 1, 7, SET, 4).signed(MEMBERS[4].sign)
    unsigned = Endorsement("fed", 0, 7, SET, 4)
    junk = [forged, other_set, other_round, other_fed, other_epoch, unsigned]
    assert _count([_signed(1), *junk]) == {1}
    # not in the pinned roster: member 4's own valid endorsement
    assert _count([_signed(1), _signed(4)], _roster((1, 2, 3))) == {1}
