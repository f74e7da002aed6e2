"""he_agg.ckks_encoder against SEAL's CKKSEncoder: the same plaintexts up to float rounding
in the last bits, SEAL decodes ours to the values, exact residues of any rounded double,
and a clear refusal of values too large for the modulus."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from he_agg import ckks_encoder, ntt
from he_agg.encoding import blocks, decode_aggregate, encode_block
from he_agg.errors import ParameterError
from he_agg.params import DEFAULT, ParameterSet, derive_parameters
from he_agg.seal_codec import plaintext_from_bytes
from he_agg.seal_context import save_bytes, seal_context

NO_PROOFS = derive_parameters("default-no-proofs", proofs=False)
SMALL = derive_parameters("encoder-test", k_max=16, value_bits=15, proofs=False)  # N = 4096
WIDE = derive_parameters("encoder-wide", k_max=4, committee_max=3, value_bits=12)  # 60-bit


@pytest.fixture(params=[DEFAULT, NO_PROOFS, SMALL, WIDE], ids=lambda p: p.name)
def any_set(request: pytest.FixtureRequest) -> ParameterSet:
    params: ParameterSet = request.param
    return params


def _values(params: ParameterSet, seed: int = 1) -> np.ndarray:
    """Three blocks at three magnitudes, within what a client may send."""
    rng = np.random.default_rng(seed)
    top = min(1e3, params.client_value_bound / 4)
    scales = np.repeat([1e-3, 1.0, top], params.poly_degree)
    return rng.normal(0, 1, 3 * params.poly_degree) * scales


def _seal_words(values: np.ndarray, params: ParameterSet) -> np.ndarray:
    ctx = seal_context(params)
    encoder = sealapi.CKKSEncoder(ctx.context)
    shape = (len(params.data_primes), params.poly_degree)
    return np.stack(
        [
            plaintext_from_bytes(save_bytes(encode_block(block, ctx, encoder))).data.reshape(shape)
            for block in blocks(values, params.slots)
        ]
    )


def _centred_coefficients(words: np.ndarray, primes: tuple[int, ...]) -> list[int]:
    """The integer coefficients of a plaintext (L, N) by CRT over the data primes."""
    modulus = math.prod(primes)
    total = [0] * words.shape[-1]
    for j, q in enumerate(primes):
        basis = modulus // q * pow(modulus // q, -1, q)
        for k, c in enumerate(ntt.inverse(words[j], q).tolist()):
            total[k] += c * basis
    return [c % modulus - modulus if c % modulus > modulus // 2 else c % modulus for c in total]


def test_plaintexts_equal_seals_up_to_float_rounding(any_set: ParameterSet) -> None:
    params = any_set
    values = _values(params)
    ours = ckks_encoder.encode(blocks(values, params.slots), params)
    seal = _seal_words(values, params)
    assert ours.shape == seal.shape
    for block in range(3):
        mine = _centred_coefficients(ours[block], params.data_primes)
        theirs = _centred_coefficients(seal[block], params.data_primes)
        largest = max(abs(c) for c in theirs)
        worst = max(abs(a - b) for a, b in zip(mine, theirs, strict=True))
        # two FFTs in float64 agree to about 2^-52 of the largest coefficient; a slot put
        # at the wrong root would differ by the size of the coefficients themselves
        assert worst <= 1 + largest * 2.0**-46, (block, worst, largest)
        assert largest > 2**20  # the comparison is not vacuous


def test_seal_decodes_our_plaintexts_to_the_values(any_set: ParameterSet) -> None:
    params = any_set
    values = _values(params, seed=2)
    words = ckks_encoder.encode(blocks(values, params.slots), params)
    decoded = decode_aggregate(words, seal_context(params))
    error = np.abs(decoded - values)
    # rounding to integers at scale Δ, plus float64 error relative to each block's size
    for block in range(3):
        part = slice(block * params.poly_degree, (block + 1) * params.poly_degree)
        size = np.abs(values[part]).max()
        assert error[part].max() <= 2.0**-40 * size + params.poly_degree / params.scale


@pytest.mark.parametrize("q", [*DEFAULT.data_primes, *WIDE.data_primes, 114689])
def test_residues_of_rounded_doubles_are_exact(q: int) -> None:
    edges = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        float(q - 1),
        float(q),
        -float(q),
        2.0**53 - 1,
        -(2.0**53),
        2.0**53 + 2,
        2.0**63,
        -(2.0**63),
        2.0**64,
        2.0**100 + 2.0**48,
        -(2.0**117 - 2.0**64),
        float(2**120 - 2**67),
    ]
    rng = np.random.default_rng(q % 1000)
    randoms = [float(np.rint(x)) for x in rng.normal(0, 2.0**80, 200)]
    doubles = np.array([edges + randoms], dtype=np.float64)
    powers, quotients = ckks_encoder._powers_of_two(q)
    out = np.empty(doubles.shape, dtype=np.uint64)
    ckks_encoder._residues(doubles, powers, quotients, np.uint64(q), out)
    want = [int(x) % q for x in doubles[0].tolist()]  # int() of an integral double is exact
    assert out[0].tolist() == want


def test_values_too_large_for_the_modulus_are_refused() -> None:
    params = SMALL
    chunk = np.zeros((1, params.poly_degree))
    chunk[:] = 2.0 ** (math.floor(params.modulus_bits) + 1) / params.scale  # m_0 ≈ Δ·value
    with pytest.raises(ParameterError, match="too large"):
        ckks_encoder.encode(chunk, params)
    chunk[0, 0] = np.nan
    with pytest.raises(ParameterError, match="too large"):
        ckks_encoder.encode(chunk, params)


def test_blocks_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(ValueError, match="blocks of N reals"):
        ckks_encoder.encode(np.zeros((2, SMALL.poly_degree // 2)), SMALL)


def test_slot_order_is_seals_rotation_group() -> None:
    """Slot j at ζ^(3^j), its conjugate at ζ^(−3^j): every root of X^N + 1 exactly once."""
    n = SMALL.poly_degree
    order = ckks_encoder.slot_order(n)
    assert sorted(order.tolist()) == list(range(n))
    assert all(2 * order[j] + 1 == pow(3, j, 2 * n) for j in range(0, n // 2, 97))
