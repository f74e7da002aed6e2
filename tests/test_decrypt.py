import dataclasses
import hashlib
import math

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from he_agg import ntt
from he_agg.aggregate import RunningSum
from he_agg.backend import encrypt_vector
from he_agg.combine import DecryptionShare, combine, lagrange_coefficient
from he_agg.encoding import decode_aggregate
from he_agg.errors import DecryptionRefused, ProtocolError
from he_agg.params import ParameterSet
from he_agg.seal_codec import SealCiphertext, ciphertext_to_bytes, plaintext_from_bytes
from he_agg.seal_context import save_bytes
from keys.committee import CommitteeSetup
from keys.decrypt import decryption_share
from tests.helpers import summed_secret_key

DIGEST = hashlib.sha256(b"aggregate").digest()


def _noise(setup: CommitteeSetup, words: np.ndarray) -> np.ndarray:
    """TEST ONLY: the centred coefficients of c0 + c1·s for ciphertexts of zero."""
    ctx = setup.public.seal
    decryptor = sealapi.Decryptor(ctx.context, summed_secret_key(setup))
    out = []
    for block in words:
        loaded = ctx.load(
            sealapi.Ciphertext,
            ciphertext_to_bytes(SealCiphertext(ctx.data_parms_id, True, block, 1.0)),
        )
        plain = sealapi.Plaintext()
        decryptor.decrypt(loaded, plain)
        rows = plaintext_from_bytes(save_bytes(plain)).data.reshape(
            len(setup.params.data_primes), -1
        )
        q0 = setup.params.data_primes[0]
        coeffs = ntt.inverse(rows[0], q0).astype(np.int64)
        out.append(np.where(coeffs > q0 // 2, coeffs - q0, coeffs))
    return np.concatenate(out)


def test_fresh_and_aggregated_noise_stay_within_the_worst_case_bound(
    committee: CommitteeSetup,
) -> None:
    params = committee.params
    zeros = np.zeros(2 * params.slots)
    fresh = [encrypt_vector(zeros, committee.public) for _ in range(6)]
    single = np.abs(_noise(committee, fresh[0])).max()
    assert 0 < single <= params.fresh_noise_bound()
    running = RunningSum(params, fresh[0].shape[0])
    for words in fresh:
        running.add(words)
    assert np.abs(_noise(committee, running.result())).max() <= 6 * params.fresh_noise_bound()


def test_share_round_trip_and_size(committee: CommitteeSetup) -> None:
    params = committee.params
    c1 = encrypt_vector(np.ones(params.slots), committee.public)[:, 1]
    share = decryption_share(committee.members[0].threshold_share, c1, (1, 2, 3), params, DIGEST)
    blob = share.to_bytes(params)
    back = DecryptionShare.from_bytes(blob, params)
    assert (back.member, back.decryption_set, back.aggregate_digest) == (1, (1, 2, 3), DIGEST)
    assert np.array_equal(back.words, share.words)
    assert len(blob) / params.slots <= sum(params.prime_bits) / 8 + 1  # log2 q bits each


def test_a_share_names_its_key_epoch(committee: CommitteeSetup) -> None:
    """Format 2 carries the epoch; a format-1 share (no epoch field, written before key
    epochs) still reads, as epoch 0; combine refuses shares of different epochs."""
    params = committee.params
    c1 = encrypt_vector(np.ones(params.slots), committee.public)[:, 1]
    made = [
        decryption_share(m.threshold_share, c1, (1, 2, 3), params, DIGEST, epoch=7)
        for m in committee.members[:3]
    ]
    blob = made[0].to_bytes(params)
    assert blob[:4] == b"HED2" and DecryptionShare.from_bytes(blob, params).epoch == 7
    legacy = b"HEDS" + blob[4:68] + blob[72:]  # the same share without its epoch field
    back = DecryptionShare.from_bytes(legacy, params)
    assert back.epoch == 0 and np.array_equal(back.words, made[0].words)
    other = dataclasses.replace(made[2], epoch=8)
    with pytest.raises(ProtocolError, match="epochs"):
        combine(c1, [*made[:2], other], params)


def test_a_member_outside_the_set_or_below_the_rule_refuses(committee: CommitteeSetup) -> None:
    params = committee.params
    c1 = encrypt_vector(np.ones(8), committee.public)[:, 1]
    share = committee.members[3].threshold_share
    with pytest.raises(DecryptionRefused):
        decryption_share(share, c1, (1, 2, 3), params, DIGEST)
    with pytest.raises(DecryptionRefused):
        decryption_share(share, c1, (4, 4, 3), params, DIGEST)
    with pytest.raises(DecryptionRefused, match="below the rule"):
        decryption_share(
            share,
            c1,
            (4, 2, 3),
            params,
            DIGEST,
            flood_bits=_just_below_the_rule(params),
        )


def test_identical_decryption_shares_differ_by_fresh_flooding(committee: CommitteeSetup) -> None:
    params = committee.params
    c1 = encrypt_vector(np.ones(8), committee.public)[:, 1]
    share = committee.members[0].threshold_share
    first = decryption_share(share, c1, (1, 2, 3), params, DIGEST)
    second = decryption_share(share, c1, (1, 2, 3), params, DIGEST)
    assert not np.array_equal(first.words, second.words)  # why a member stores and re-sends


def test_combine_needs_exactly_the_named_set(committee: CommitteeSetup) -> None:
    params = committee.params
    words = encrypt_vector(np.arange(10.0), committee.public)
    subset = (2, 3, 5)
    shares = [
        decryption_share(
            committee.members[k - 1].threshold_share, words[:, 1], subset, params, DIGEST
        )
        for k in subset
    ]
    decoded = decode_aggregate(combine(words[:, 0], shares, params), committee.public.seal)
    assert np.abs(decoded[:10] - np.arange(10.0)).max() < params.error_bound(3)
    with pytest.raises(ProtocolError):
        combine(words[:, 0], shares[:2], params)
    other = decryption_share(
        committee.members[0].threshold_share, words[:, 1], (1, 3, 5), params, DIGEST
    )
    with pytest.raises(ProtocolError):
        combine(words[:, 0], [*shares[:2], other], params)


def test_lagrange_coefficients_interpolate_at_zero() -> None:
    q = 40961
    subset = (1, 3, 4)
    # f(x) = 5 + 2x + 7x^2: Σ λ_k f(k) = f(0)
    values = {k: (5 + 2 * k + 7 * k * k) % q for k in subset}
    assert sum(lagrange_coefficient(k, subset, q) * values[k] for k in subset) % q == 5


def _just_below_the_rule(params: ParameterSet) -> int:
    """The largest flooding width in bits that the rule refuses (2^bits < the rule's σ)."""
    return math.floor(math.log2(params.required_flood_sigma()))
