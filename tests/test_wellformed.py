"""The proof that every c1 of an upload is an honest RLWE sample (he_agg.wellformed), and the
reference encryption it speaks of (he_agg.rlwe): completeness, SEAL decrypting what we
encrypt, every single change refused, replays refused, the key-extraction ciphertexts
unprovable, the responses' distribution independent of the witness, and the rejection
rate the design predicts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from he_agg import wellformed as wf
from he_agg.encoding import decode_aggregate, encode_block
from he_agg.modarith import U64Array
from he_agg.params import ParameterSet, derive_parameters
from he_agg.rlwe import (
    EncryptionWitness,
    encrypt_words,
    fresh_noise_bound,
    key_rows,
    sample_witness,
)
from he_agg.sampling import KEY_NOISE_CLIP
from he_agg.seal_codec import SealCiphertext, ciphertext_to_bytes, plaintext_from_bytes
from he_agg.seal_context import save_bytes
from keys.committee import CommitteeSetup, run_committee_setup
from tests.helpers import summed_secret_key

COUNT = 3


@pytest.fixture(scope="module")
def small() -> ParameterSet:
    return derive_parameters("wellformed-test", k_max=4, committee_max=3, value_bits=12)


@pytest.fixture(scope="module")
def setup(small: ParameterSet) -> CommitteeSetup:
    return run_committee_setup(small, "wf-fed", members=3, threshold=2)


def _context(params: ParameterSet, **change: object) -> wf.ProofContext:
    base = wf.ProofContext(params.fingerprint, "wf-fed", 0, 5, "bank-1", b"\x07" * 32)
    return dataclasses.replace(base, **change)  # type: ignore[arg-type]


def _encrypt(setup: CommitteeSetup, values: np.ndarray) -> tuple[U64Array, EncryptionWitness]:
    params = setup.params
    ctx = setup.public.seal
    encoder = sealapi.CKKSEncoder(ctx.context)
    blocks = values.reshape(-1, params.slots)
    plain = np.stack(
        [
            plaintext_from_bytes(save_bytes(encode_block(b, ctx, encoder))).data.reshape(
                len(params.data_primes), params.poly_degree
            )
            for b in blocks
        ]
    )
    witness = sample_witness(len(blocks), params)
    return encrypt_words(plain, key_rows(setup.public), witness, params), witness


@pytest.fixture(scope="module")
def upload(setup: CommitteeSetup) -> tuple[U64Array, EncryptionWitness, wf.WellFormedProof]:
    values = np.random.default_rng(1).normal(size=COUNT * setup.params.slots)
    words, witness = _encrypt(setup, values)
    proof = wf.prove(
        words[:, 1], witness, key_rows(setup.public), setup.params, _context(setup.params)
    )
    return words, witness, proof


# ---- the reference encryption ------------------------------------------------------------


def test_seal_decrypts_the_reference_encryption(setup: CommitteeSetup) -> None:
    """TEST ONLY: the summed secret key, loaded into SEAL, decrypts our ciphertexts."""
    params = setup.params
    values = np.random.default_rng(2).normal(size=2 * params.slots) * 100
    words, _ = _encrypt(setup, values)
    ctx = setup.public.seal
    decryptor = sealapi.Decryptor(ctx.context, summed_secret_key(setup))
    out = []
    for block in words:
        cipher = ctx.load(
            sealapi.Ciphertext,
            ciphertext_to_bytes(
                SealCiphertext(ctx.data_parms_id, True, block, 2.0**params.scale_bits)
            ),
        )
        plain = sealapi.Plaintext()
        decryptor.decrypt(cipher, plain)
        decrypted = plaintext_from_bytes(save_bytes(plain)).data
        shape = (1, len(params.data_primes), params.poly_degree)
        out.append(decode_aggregate(decrypted.reshape(shape), ctx)[: params.slots])
    # fresh noise ≤ 2·N·n·B_e + B_e (he_agg.rlwe), spread by decoding over ≤ N slots
    # plus SEAL's binary64 decoding, about 2^-45 of the values here
    bound = fresh_noise_bound(params) * params.poly_degree / 2.0**params.scale_bits
    assert np.abs(np.concatenate(out) - values).max() <= bound + 1e-9 * np.abs(values).max()


def test_encryption_is_a_function_of_its_witness(setup: CommitteeSetup) -> None:
    params = setup.params
    plain = np.zeros((1, len(params.data_primes), params.poly_degree), np.uint64)
    witness = sample_witness(1, params)
    key = key_rows(setup.public)
    again = encrypt_words(plain, key, witness, params)
    assert np.array_equal(encrypt_words(plain, key, witness, params), again)
    other = dataclasses.replace(witness, e1=witness.e1 + 1)
    assert not np.array_equal(encrypt_words(plain, key, other, params)[:, 1], again[:, 1])


# ---- completeness and the wire ---------------------------------------------------------


def test_an_honest_proof_verifies_and_round_trips(setup: CommitteeSetup, upload) -> None:  # type: ignore[no-untyped-def]
    words, _, proof = upload
    params = setup.params
    bounds = wf.proof_bounds(params, COUNT)
    blob = proof.to_bytes(bounds)
    again = wf.WellFormedProof.from_bytes(blob, bounds, params.poly_degree)
    wf.verify(words[:, 1], again, key_rows(setup.public), params, _context(params))
    assert again.seed == proof.seed and np.array_equal(again.zu, proof.zu)
    with pytest.raises(wf.ProofError, match="bytes"):
        wf.WellFormedProof.from_bytes(blob[:-1], bounds, params.poly_degree)


# ---- every single change is refused ----------------------------------------------------


def _refused(
    setup: CommitteeSetup, c1: U64Array, proof: wf.WellFormedProof, **context: object
) -> None:
    with pytest.raises(wf.ProofError):
        wf.verify(
            c1, proof, key_rows(setup.public), setup.params, _context(setup.params, **context)
        )


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_changed_proof_coefficient_is_refused(setup: CommitteeSetup, upload, where: str) -> None:  # type: ignore[no-untyped-def]
    words, _, proof = upload
    index = {"first": (0, 0), "middle": (64, 2048), "last": (-1, -1)}[where]
    for part in ("zu", "ze"):
        changed = getattr(proof, part).copy()
        changed[index] += 1
        _refused(setup, words[:, 1], dataclasses.replace(proof, **{part: changed}))
    seed = bytearray(proof.seed)
    seed[{"first": 0, "middle": 16, "last": -1}[where]] ^= 1
    _refused(setup, words[:, 1], dataclasses.replace(proof, seed=bytes(seed)))


@pytest.mark.parametrize("position", [(0, 0, 0), (1, 1, 100), (2, 0, -1)])
def test_a_changed_ciphertext_word_is_refused(setup: CommitteeSetup, upload, position) -> None:  # type: ignore[no-untyped-def]
    words, _, proof = upload
    c1 = words[:, 1].copy()
    q = setup.params.data_primes[position[1]]
    c1[position] = (c1[position] + np.uint64(1)) % np.uint64(q)
    _refused(setup, c1, proof)


@pytest.mark.parametrize(
    "change",
    [
        {"round": 6},
        {"client": "bank-2"},
        {"first_index": 1},
        {"epoch": 1},
        {"federation": "other"},
        {"roster_digest": b"\x08" * 32},
        {"parameters": b"\x00" * 32},
    ],
)
def test_a_proof_replayed_in_another_context_is_refused(setup, upload, change) -> None:  # type: ignore[no-untyped-def]
    words, _, proof = upload
    _refused(setup, words[:, 1], proof, **change)


def test_a_proof_for_fewer_or_reordered_ciphertexts_is_refused(setup, upload) -> None:  # type: ignore[no-untyped-def]
    words, _, proof = upload
    _refused(setup, words[::-1, 1].copy(), proof)
    with pytest.raises(wf.ProofError):
        wf.verify(words[:2, 1], proof, key_rows(setup.public), setup.params, _context(setup.params))


def test_a_response_out_of_range_is_refused_before_hashing(setup, upload) -> None:  # type: ignore[no-untyped-def]
    words, _, proof = upload
    bounds = wf.proof_bounds(setup.params, COUNT)
    big = proof.zu.copy()
    big[3, 3] = bounds.gamma_u  # beyond γ − β
    with pytest.raises(wf.ProofError, match="out of range"):
        wf.verify(
            words[:, 1],
            dataclasses.replace(proof, zu=big),
            key_rows(setup.public),
            setup.params,
            _context(setup.params),
        )


# ---- the key-extraction ciphertexts of the issue ------------------------------------------


def test_the_key_extraction_ciphertexts_cannot_be_proven(setup: CommitteeSetup, upload) -> None:  # type: ignore[no-untyped-def]
    """A constant c1 (decrypting to Σ s_i·C) and a c1 that cancels an honest one have no
    short opening; proving them with any witness the attacker holds fails verification."""
    params = setup.params
    words, witness, _ = upload
    key = key_rows(setup.public)
    constant = np.zeros_like(words[:1, 1])
    for j, q in enumerate(params.data_primes):
        constant[0, j] = np.uint64((1 << 40) % q)  # the constant polynomial is flat in NTT form
    cancel = np.zeros_like(words[:1, 1])
    for j, q in enumerate(params.data_primes):
        cancel[0, j] = (np.uint64(q) - words[0, 1, j]) % np.uint64(q)
    own = sample_witness(1, params)
    for forged in (constant, cancel):
        for guess in (own, EncryptionWitness(witness.u[:1], witness.e0[:1], witness.e1[:1])):
            proof = wf.prove(forged, guess, key, params, _context(params))
            with pytest.raises(wf.ProofError):
                wf.verify(forged, proof, key, params, _context(params))


# ---- zero knowledge and rejection ------------------------------------------------------


def _ks_statistic(x: np.ndarray, y: np.ndarray) -> float:
    both = np.sort(np.concatenate([x, y]))
    cdf_x = np.searchsorted(np.sort(x), both, side="right") / x.size
    cdf_y = np.searchsorted(np.sort(y), both, side="right") / y.size
    return float(np.abs(cdf_x - cdf_y).max())


def test_responses_do_not_depend_on_the_witness(setup: CommitteeSetup) -> None:
    """Two-sample Kolmogorov–Smirnov on z from two different witnesses (all-zero, and the
    largest allowed: u = 1, e1 = B_e everywhere) must not tell them apart at α = 10^-3, and
    the accepted z must be uniform on the box [−(γ − β), γ − β]. A negative control shows the
    statistic has power: masks far narrower than the design's, without rejection, are told
    apart at once."""
    params = setup.params
    key = key_rows(setup.public)
    count, n = 64, params.poly_degree
    bounds = wf.proof_bounds(params, count, rows=2)
    zero = EncryptionWitness(
        np.zeros((count, n), np.int8),
        np.zeros((count, n), np.int64),
        np.zeros((count, n), np.int64),
    )
    heavy = EncryptionWitness(
        np.ones((count, n), np.int8),
        np.zeros((count, n), np.int64),
        np.full((count, n), KEY_NOISE_CLIP, np.int64),
    )
    plain = np.zeros((count, len(params.data_primes), n), np.uint64)
    samples = []
    for witness in (zero, heavy):
        c1 = encrypt_words(plain, key, witness, params)[:, 1]
        proof = wf.prove(c1, witness, key, params, _context(params), bounds)
        samples.append((proof.zu.ravel().astype(float), proof.ze.ravel().astype(float)))
    size = samples[0][0].size
    critical = 1.95 * math.sqrt(2 / size)  # two-sample KS, α = 10^-3
    for part in (0, 1):
        assert _ks_statistic(samples[0][part], samples[1][part]) < critical
    box = bounds.gamma_u - bounds.beta_u
    uniform = np.random.default_rng(3).integers(-box, box + 1, size=size).astype(float)
    assert _ks_statistic(samples[1][0], uniform) < critical
    # negative control: masks of width 4·count instead of ≥ 2·m·N·β, no rejection
    narrow = np.random.default_rng(4).integers(-4 * count, 4 * count + 1, size=(2, n))
    matrix = wf.challenge_matrix(b"\x05" * 32, 2, count).astype(np.int64)
    leaky = [(narrow + matrix @ w.u.astype(np.int64)).ravel().astype(float) for w in (zero, heavy)]
    assert _ks_statistic(*leaky) > critical


def test_the_rejection_rate_matches_the_prediction(setup: CommitteeSetup) -> None:
    """Attempts per proof are geometric with p = acceptance(); over 40 proofs the mean must
    fall within 4 standard errors of 1/p (rows cut to 16 to keep the test fast)."""
    params = setup.params
    key = key_rows(setup.public)
    bounds = wf.proof_bounds(params, 2, rows=16)
    p = bounds.acceptance(params.poly_degree)
    assert 0.3 < p < 0.9
    witness = sample_witness(2, params)
    plain = np.zeros((2, len(params.data_primes), params.poly_degree), np.uint64)
    c1 = encrypt_words(plain, key, witness, params)[:, 1]
    attempts: list[int] = []
    for _ in range(40):
        wf.prove(c1, witness, key, params, _context(params), bounds, attempts)
    mean, sd = 1 / p, math.sqrt(1 - p) / p
    assert abs(float(np.mean(attempts)) - mean) <= 4 * sd / math.sqrt(len(attempts))


def test_challenge_matrix_is_binary_and_balanced() -> None:
    matrix = wf.challenge_matrix(b"\x01" * 32, 128, 64)
    assert matrix.shape == (128, 64) and set(np.unique(matrix)) <= {0, 1}
    assert abs(float(matrix.mean()) - 0.5) < 0.02
    assert not np.array_equal(matrix, wf.challenge_matrix(b"\x02" * 32, 128, 64))


@pytest.mark.parametrize("with_minus", [False, True])
def test_compiled_commitments_equal_the_numpy_reference_word_for_word(
    setup: CommitteeSetup, with_minus: bool
) -> None:
    """The fused compiled pass (he_agg.ntt_compiled.affine_rows) that the prover and the
    verifier use computes the same words as the numpy composition, for masks at the edge
    of their range, negative and positive."""
    params = setup.params
    key = key_rows(setup.public)
    bounds = wf.proof_bounds(params, COUNT)
    rng = np.random.default_rng(7)
    shape = (bounds.rows, params.poly_degree)
    zu = rng.integers(-bounds.gamma_u, bounds.gamma_u, shape, endpoint=True)
    ze = rng.integers(-bounds.gamma_e, bounds.gamma_e, shape, endpoint=True)
    zu[0, :2], ze[0, :2] = (-bounds.gamma_u, bounds.gamma_u), (-bounds.gamma_e, bounds.gamma_e)
    minus = None
    if with_minus:
        minus = [rng.integers(0, q, shape, dtype=np.uint64) for q in params.data_primes]
        minus[0][0, :2] = (0, params.data_primes[0] - 1)
    compiled = wf._commitments(zu, ze, key, params, minus)
    reference = wf._commitments_reference(zu, ze, key, params, minus)
    assert compiled.dtype == np.uint64
    np.testing.assert_array_equal(compiled, reference)
    # the rows shared out to threads, in uneven chunks (3 threads, one row a task at least)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wf, "_THREADS", 3)
        patch.setattr(wf, "_MIN_ROWS_PER_TASK", 1)
        np.testing.assert_array_equal(wf._commitments(zu, ze, key, params, minus), reference)


def test_a_strided_view_hashes_as_its_contiguous_copy() -> None:
    """The seed's hash reads an upload's c1 (between its c0's) block by block: the same
    bytes, in the same order, as the contiguous little-endian copy."""
    import hashlib

    words = np.random.default_rng(5).integers(0, 2**44, size=(7, 2, 3, 64), dtype=np.uint64)
    for view in (words[:, 1], words[2:5, 0], words[:, :, 1], words):
        fed = hashlib.sha256()
        wf._hash_words(fed, view)
        whole = hashlib.sha256(np.ascontiguousarray(view, dtype="<u8").tobytes())
        assert fed.digest() == whole.digest()
