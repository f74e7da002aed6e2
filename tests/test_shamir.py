from dataclasses import replace

import numpy as np
import pytest

from he_agg.combine import lagrange_coefficient
from he_agg.errors import ProtocolError, SignatureError
from he_agg.params import DEFAULT
from keys.committee import CommitteeSetup
from keys.identity import Identity
from keys.keygen import gen_secret_share
from keys.shamir import EncryptedShare, ThresholdShare, deal_shares, open_share

P = DEFAULT


@pytest.fixture(scope="module")
def parties() -> list[Identity]:
    return [Identity.generate(i) for i in range(1, 5)]


@pytest.fixture(scope="module")
def dealt(parties: list[Identity]) -> list[EncryptedShare]:
    secret = gen_secret_share(P, 1)
    return deal_shares(secret, P, 2, [p.public for p in parties], parties[0], "f", 3)


def test_message_round_trip(dealt: list[EncryptedShare]) -> None:
    for message in dealt:
        assert EncryptedShare.from_bytes(message.to_bytes()) == message


def test_only_the_recipient_opens_its_share(
    parties: list[Identity], dealt: list[EncryptedShare]
) -> None:
    open_share(dealt[1], parties[1], parties[0].public, P, "f", 3)
    with pytest.raises(ProtocolError):
        open_share(dealt[1], parties[2], parties[0].public, P, "f", 3)
    impostor = replace(parties[2], index=2)  # right index, wrong key
    with pytest.raises(ProtocolError):
        open_share(dealt[1], impostor, parties[0].public, P, "f", 3)


def test_tampering_and_forged_signatures_are_refused(
    parties: list[Identity], dealt: list[EncryptedShare]
) -> None:
    message = dealt[1]
    flipped = bytes([message.ciphertext[0] ^ 1]) + message.ciphertext[1:]
    with pytest.raises(SignatureError):
        open_share(replace(message, ciphertext=flipped), parties[1], parties[0].public, P, "f", 3)
    forged = replace(message, ciphertext=flipped)
    forged = replace(forged, signature=parties[3].sign(forged.signed_part()))
    with pytest.raises(SignatureError):  # signed, but not by the claimed sender
        open_share(forged, parties[1], parties[0].public, P, "f", 3)
    with pytest.raises(ProtocolError):
        open_share(message, parties[1], parties[0].public, P, "f", 4)  # other epoch


def test_threshold_shares_reconstruct_the_summed_secret(committee: CommitteeSetup) -> None:
    """TEST ONLY: Lagrange-combine t shares and compare with Σ s_i in NTT form."""
    primes = P.data_primes
    expected = sum(m.secret.coeffs.astype(np.int64) for m in committee.members)
    from keys.keygen import SecretShare

    target = SecretShare(0, np.asarray(expected)).ntt_form(primes)  # type: ignore[arg-type]
    for subset in [(1, 2, 3), (2, 4, 5), (1, 3, 5)]:
        for j, q in enumerate(primes):
            total = np.zeros(P.poly_degree, dtype=object)
            for k in subset:
                weight = lagrange_coefficient(k, subset, q)
                total = (
                    total
                    + committee.members[k - 1].threshold_share.words[j].astype(object) * weight
                ) % q
            assert np.array_equal(total.astype(np.uint64), target[j])
    # two shares are not enough: their Lagrange combination is something else entirely
    j, q, subset = 0, primes[0], (1, 2)
    total = (
        sum(
            committee.members[k - 1].threshold_share.words[j].astype(object)
            * lagrange_coefficient(k, subset, q)
            for k in subset
        )
        % q
    )
    assert not np.array_equal(total.astype(np.uint64), target[0])


def test_threshold_share_round_trip(committee: CommitteeSetup) -> None:
    share = committee.members[0].threshold_share
    back = ThresholdShare.from_bytes(share.to_bytes(P), P)
    assert back.member == share.member and np.array_equal(back.words, share.words)


def test_bad_dealing_arguments(parties: list[Identity]) -> None:
    secret = gen_secret_share(P, 1)
    with pytest.raises(ProtocolError):
        deal_shares(secret, P, 5, [p.public for p in parties], parties[0], "f", 0)
    with pytest.raises(ProtocolError):
        deal_shares(secret, P, 2, [p.public for p in parties], parties[1], "f", 0)
