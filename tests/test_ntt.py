"""The NTT must agree with SEAL's to the bit, for every prime we use."""

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from he_agg import ntt
from he_agg.modarith import find_ntt_primes
from he_agg.params import DEFAULT
from he_agg.seal_codec import SealCiphertext, ciphertext_from_bytes, ciphertext_to_bytes
from he_agg.seal_context import save_bytes
from tests.helpers import random_words

# The default set's primes (N=4096), and 60/40-bit primes at N=8192 as NVFlare uses.
CHAINS = [
    (DEFAULT.poly_degree, (*DEFAULT.data_primes, DEFAULT.special_prime)),
    (8192, find_ntt_primes(8192, (60, 40, 40, 60))),
]


def _context(n: int, primes: tuple[int, ...]) -> object:
    """A SEAL context whose first data level holds every prime under test.

    SEAL only loads ciphertexts at data levels, so one more prime is appended to play
    the special prime; security checks are off because this context only runs NTTs.
    """
    (extra,) = find_ntt_primes(n, (59,))  # no chain under test uses a 59-bit prime
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus([sealapi.Modulus(q) for q in (*primes, extra)])
    return sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.NONE)


def _seal_from_ntt(context: object, words: np.ndarray) -> np.ndarray:
    """SEAL's inverse NTT of NTT-form words (SEAL loads CKKS ciphertexts only in NTT form)."""
    blob = ciphertext_to_bytes(SealCiphertext(tuple(context.first_parms_id()), True, words, 1.0))
    path = "/tmp/he-agg-test-ntt.bin"
    with open(path, "wb") as handle:
        handle.write(blob)
    loaded = sealapi.Ciphertext()
    loaded.load(context, path)
    out = sealapi.Ciphertext()
    sealapi.Evaluator(context).transform_from_ntt(loaded, out)
    result = ciphertext_from_bytes(save_bytes(out))
    assert not result.is_ntt_form
    return result.data


@pytest.mark.parametrize(("n", "primes"), CHAINS, ids=["default-4096", "nvflare-8192"])
@pytest.mark.parametrize("seed", [1, 2])
def test_forward_and_inverse_are_bit_exact_with_seal_for_every_prime(
    n: int, primes: tuple[int, ...], seed: int
) -> None:
    context = _context(n, primes)
    values = random_words(primes, (2,), n, seed)
    seal_coeffs = _seal_from_ntt(context, values)
    ours_inverse = np.stack([ntt.inverse(values[:, j], q) for j, q in enumerate(primes)], axis=1)
    assert np.array_equal(ours_inverse, seal_coeffs)
    ours_forward = np.stack(
        [ntt.forward(seal_coeffs[:, j], q) for j, q in enumerate(primes)], axis=1
    )
    assert np.array_equal(ours_forward, values)


def test_inverse_undoes_forward_on_batches() -> None:
    q = DEFAULT.data_primes[0]
    batch = random_words((q,), (3, 2), DEFAULT.poly_degree)[..., 0, :]
    assert np.array_equal(ntt.inverse(ntt.forward(batch, q), q), batch)


def test_ntt_turns_negacyclic_convolution_into_pointwise_product() -> None:
    q, n = 40961, 16
    rng = np.random.default_rng(3)
    a, b = (rng.integers(0, q, n, dtype=np.uint64) for _ in range(2))
    expected = [0] * n
    for i in range(n):
        for j in range(n):
            k, sign = (i + j) % n, (-1 if i + j >= n else 1)
            expected[k] = (expected[k] + sign * int(a[i]) * int(b[j])) % q
    product = [
        int(x) * int(y) % q for x, y in zip(ntt.forward(a, q), ntt.forward(b, q), strict=True)
    ]
    assert ntt.inverse(np.array(product, dtype=np.uint64), q).tolist() == expected


def test_minimal_primitive_root_is_smallest() -> None:
    q, order = 40961, 64
    root = ntt.minimal_primitive_root(order, q)
    primitive = [x for x in range(1, q) if pow(x, order // 2, q) == q - 1 and pow(x, order, q) == 1]
    assert root == min(primitive)


@pytest.mark.parametrize("bits", [(30,), (44, 43, 43), (50,), (55,), (60,)])
def test_the_compiled_ntt_is_bit_exact_with_the_numpy_reference(bits: tuple[int, ...]) -> None:
    """he_agg.ntt_compiled against the numpy reference, both directions, on primes across
    the float and the 128-bit Shoup paths of the reference (≤ 50 bits and above)."""
    from he_agg import ntt_compiled

    assert ntt.COMPILED  # numba is a dependency: the default path is the compiled one
    for n in (1024, 8192):
        for q in find_ntt_primes(n, bits):
            values = np.random.default_rng(q % 1000).integers(0, q, size=(3, n), dtype=np.uint64)
            forward = ntt_compiled.forward(values, q)
            assert np.array_equal(forward, ntt.forward_reference(values, q))
            assert np.array_equal(ntt_compiled.inverse(forward, q), values)
            assert np.array_equal(ntt.inverse_reference(forward, q), values)
            edge = np.full((1, n), q - 1, dtype=np.uint64)  # the largest residues
            assert np.array_equal(ntt_compiled.forward(edge, q), ntt.forward_reference(edge, q))
