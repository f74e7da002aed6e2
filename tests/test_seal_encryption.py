"""he_agg.seal_encryption (SEAL's encryption formula, compiled) and the native backend: the
kernel word for word its numpy reference, the reference word for word the formula in big
integers, SEAL decrypting the words with the summed test key, and noise the size of SEAL's
own Encryptor's, within the bound the set's rules were derived for; and the undivided
encryption of he_agg.rlwe (compiled) word for word its reference; the key-rows cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from he_agg import ckks_encoder, ntt
from he_agg.backend import get_backend
from he_agg.backend.native import BATCH, NativeBackend
from he_agg.encoding import blocks
from he_agg.params import DEFAULT, ParameterSet, derive_parameters
from he_agg.rlwe import (
    EncryptionWitness,
    encrypt_words,
    encrypt_words_reference,
    key_rows,
    sample_witness,
)
from he_agg.seal_codec import (
    SealCiphertext,
    SealPlaintext,
    ciphertext_to_bytes,
    plaintext_from_bytes,
    plaintext_to_bytes,
)
from he_agg.seal_context import save_bytes
from he_agg.seal_encryption import encrypt_divided, encrypt_divided_reference, key_level_rows
from keys.committee import CommitteeSetup, run_committee_setup
from tests.helpers import decrypt_with_summed_key, summed_secret_key

NO_PROOFS = derive_parameters("default-no-proofs", proofs=False)
SMALL = derive_parameters("divided-test", k_max=16, value_bits=15, proofs=False)  # N = 4096
WIDE = derive_parameters("divided-wide", k_max=4, committee_max=3, value_bits=12)  # 60-bit


@pytest.fixture(scope="module")
def small() -> CommitteeSetup:
    return run_committee_setup(SMALL, "divided", members=3, threshold=2)


def _committee(params: ParameterSet) -> CommitteeSetup:
    return run_committee_setup(params, "divided", members=3, threshold=2)


def _inputs(
    setup: CommitteeSetup, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, EncryptionWitness]:
    params = setup.params
    values = np.random.default_rng(seed).normal(0, 10, count * params.poly_degree)
    plain = ckks_encoder.encode(blocks(values, params.slots), params)
    return values, plain, sample_witness(count, params)


@pytest.mark.parametrize("params", [SMALL, NO_PROOFS, DEFAULT, WIDE], ids=lambda p: p.name)
def test_the_kernel_equals_the_numpy_reference_word_for_word(params: ParameterSet) -> None:
    setup = _committee(params)
    _, plain, witness = _inputs(setup, 3)
    # ends of the ranges: u all −1 in one block, errors at ±19 in another
    witness.u[0] = -1
    witness.e0[1] = 19
    witness.e1[1] = -19
    key = key_level_rows(setup.public)
    got = encrypt_divided(plain, key, witness, params)
    assert got.shape == (3, 2, len(params.data_primes), params.poly_degree)
    assert np.array_equal(got, encrypt_divided_reference(plain, key, witness, params))
    wild = np.random.default_rng(8).integers(-(2**62), 2**62, witness.e1.shape)
    witness = EncryptionWitness(witness.u, witness.e0, wild)  # any int64: reduced exactly
    got = encrypt_divided(plain, key, witness, params)
    assert np.array_equal(got, encrypt_divided_reference(plain, key, witness, params))


def test_the_reference_is_the_formula_in_big_integers(small: CommitteeSetup) -> None:
    """c_k = round((K_k·u + e_k)/p) mod q over the integers mod q·p, plus m in c0."""
    params = small.params
    _, plain, witness = _inputs(small, 1, seed=4)
    key = key_level_rows(small.public)
    words = encrypt_divided_reference(plain, key, witness, params)
    primes, p = key.primes, params.special_prime
    q_all = math.prod(params.data_primes)
    modulus = q_all * p
    for part, (rows, error) in enumerate(((key.b, witness.e0[0]), (key.a, witness.e1[0]))):
        total = [0] * params.poly_degree
        for j, q in enumerate(primes):
            u_hat = ntt.forward(np.mod(witness.u[0].astype(np.int64), q).astype(np.uint64), q)
            product = [int(x) * int(y) % q for x, y in zip(u_hat, rows[j], strict=True)]
            coeffs = ntt.inverse(np.array(product, dtype=np.uint64), q).tolist()
            basis = modulus // q * pow(modulus // q, -1, q)
            for k in range(params.poly_degree):
                total[k] += (coeffs[k] + int(error[k])) % q * basis
        rounded = [((c % modulus) + p // 2) // p % q_all for c in total]
        for j, q in enumerate(params.data_primes):
            want = ntt.forward(np.array([c % q for c in rounded], dtype=np.uint64), q)
            if part == 0:
                want = (want + plain[0, j]) % np.uint64(q)
            assert np.array_equal(words[0, part, j], want), (part, j)


def _noise(setup: CommitteeSetup, words: np.ndarray, plain: np.ndarray) -> list[int]:
    """TEST ONLY: the centred coefficients of Dec_s(c) − m, s the summed key."""
    params = setup.params
    ctx = setup.public.seal
    decryptor = sealapi.Decryptor(ctx.context, summed_secret_key(setup))
    cipher = ctx.load(
        sealapi.Ciphertext,
        ciphertext_to_bytes(SealCiphertext(ctx.data_parms_id, True, words, params.scale)),
    )
    decrypted = sealapi.Plaintext()
    decryptor.decrypt(cipher, decrypted)
    got = plaintext_from_bytes(save_bytes(decrypted)).data.reshape(plain.shape)
    modulus = math.prod(params.data_primes)
    total = [0] * params.poly_degree
    for j, q in enumerate(params.data_primes):
        diff = (got[j].astype(object) - plain[j].astype(object)) % q
        coeffs = ntt.inverse(np.array(diff, dtype=np.uint64), q).tolist()
        basis = modulus // q * pow(modulus // q, -1, q)
        for k in range(params.poly_degree):
            total[k] += coeffs[k] * basis
    return [c % modulus - modulus if c % modulus > modulus // 2 else c % modulus for c in total]


def test_noise_is_seals_and_within_the_sets_bound(small: CommitteeSetup) -> None:
    params = small.params
    _, plain, witness = _inputs(small, 1, seed=5)
    ours = _noise(
        small, encrypt_divided(plain, key_level_rows(small.public), witness, params)[0], plain[0]
    )
    # SEAL's own Encryptor on the same plaintext, for comparison
    ctx = small.public.seal
    loaded = ctx.load(
        sealapi.Plaintext,
        plaintext_to_bytes(SealPlaintext(ctx.data_parms_id, plain[0].reshape(-1), params.scale)),
    )
    theirs_words = get_backend("seal").encrypt_plaintext(loaded, small.public)  # type: ignore[attr-defined]
    theirs = _noise(small, theirs_words, plain[0])
    bound = params.fresh_noise_bound()
    assert max(map(abs, ours)) <= bound and max(map(abs, theirs)) <= bound
    spread_ours, spread_theirs = float(np.std(ours)), float(np.std(theirs))
    assert spread_theirs > 1  # the comparison is not vacuous
    # the same distribution: over 4,096 coefficients the spreads agree to a few per cent;
    # without the division by p the noise would be about p = 2^15 times larger
    assert 0.8 < spread_ours / spread_theirs < 1.25, (spread_ours, spread_theirs)


def test_the_native_backend_encrypts_what_seal_decrypts(small: CommitteeSetup) -> None:
    params = small.params
    backend = get_backend("native")
    assert isinstance(backend, NativeBackend) and backend.name == "native"
    count = BATCH + 3  # two batches, the second short
    values = np.random.default_rng(6).uniform(-100, 100, count * params.slots - 7)
    seen: list[int] = []
    words = backend.encrypt(values, small.public, seen.append)
    assert words.shape == (count, 2, len(params.data_primes), params.poly_degree)
    assert seen == [BATCH, 3]
    decrypted = decrypt_with_summed_key(small, words)
    assert np.abs(decrypted[: values.size] - values).max() < 1e-6
    assert np.abs(decrypted[values.size :]).max() < 1e-6  # the padding decrypts to zeros
    again = backend.encrypt(values, small.public)
    assert not np.array_equal(again, words)  # fresh randomness every time


def test_mismatched_keys_and_shapes_are_refused(small: CommitteeSetup) -> None:
    params = small.params
    _, plain, witness = _inputs(small, 2)
    with pytest.raises(ValueError, match="key-level primes"):
        encrypt_divided(plain, key_rows(small.public), witness, params)  # data rows only
    with pytest.raises(ValueError, match="disagree in shape"):
        encrypt_divided(plain[:1], key_level_rows(small.public), witness, params)


@pytest.mark.parametrize("params", [SMALL, DEFAULT, WIDE], ids=lambda p: p.name)
def test_undivided_encryption_equals_its_numpy_reference_word_for_word(
    params: ParameterSet,
) -> None:
    """he_agg.rlwe.encrypt_words (compiled, what the proofs speak of) against its reference."""
    setup = _committee(params)
    _, plain, witness = _inputs(setup, 3, seed=7)
    witness.u[0] = 1
    witness.e0[2] = -19
    witness.e1[2] = 19
    key = key_rows(setup.public)
    got = encrypt_words(plain, key, witness, params)
    assert np.array_equal(got, encrypt_words_reference(plain, key, witness, params))
    with pytest.raises(ValueError, match="data primes"):
        encrypt_words(plain, key_level_rows(setup.public), witness, params)


def test_key_rows_are_kept_per_key_and_read_only(small: CommitteeSetup) -> None:
    first = key_rows(small.public)
    assert key_rows(small.public) is first  # kept: the quotients are computed once
    assert key_level_rows(small.public).primes == (*SMALL.data_primes, SMALL.special_prime)
    with pytest.raises(ValueError, match="read-only"):
        first.b[0, 0] = 0
    other = run_committee_setup(SMALL, "divided", members=3, threshold=2)
    assert key_rows(other.public) is not first  # another key, other rows
    assert not np.array_equal(key_rows(other.public).b, first.b)
