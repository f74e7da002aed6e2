import numpy as np

from he_agg.crs import common_reference_polynomial
from he_agg.params import DEFAULT
from he_agg.sampling import flooding_noise, gaussian, ternary, to_rns, uniform_mod


def test_ternary_is_balanced_over_minus_one_zero_one() -> None:
    values = ternary(30000)
    assert set(np.unique(values).tolist()) == {-1, 0, 1}
    counts = np.bincount(values + 1)
    assert np.all(np.abs(counts - 10000) < 600)


def test_gaussian_has_seal_width_and_is_clipped() -> None:
    values = gaussian(200000)
    assert np.abs(values).max() <= 19
    assert abs(values.std() - 3.19) < 0.05


def test_flooding_noise_width_and_low_bits() -> None:
    values = flooding_noise((4, 4096), 51, 12)
    assert abs(values.std() / 2**51 - 1) < 0.05
    assert np.abs(values).max() < 12 * 2**51
    # a bare float draw would leave the low bits at zero: check they are filled
    assert len(np.unique(values & 0xFF)) > 200


def test_uniform_mod_stays_below_q_and_covers_the_range() -> None:
    q = DEFAULT.data_primes[1]
    values = uniform_mod(q, (50000,))
    assert values.max() < q and values.max() > q * 0.99 and values.min() < q * 0.01


def test_two_draws_differ() -> None:
    assert not np.array_equal(ternary(4096), ternary(4096))
    assert not np.array_equal(flooding_noise((1, 64), 40, 12), flooding_noise((1, 64), 40, 12))


def test_to_rns_maps_negatives() -> None:
    out = to_rns(np.array([-1, 0, 5]), (97, 193))
    assert out.tolist() == [[96, 0, 5], [192, 0, 5]]


def test_crs_is_deterministic_per_federation_and_below_each_prime() -> None:
    a = common_reference_polynomial(DEFAULT, "fed-a")
    assert np.array_equal(a, common_reference_polynomial(DEFAULT, "fed-a"))
    assert not np.array_equal(a, common_reference_polynomial(DEFAULT, "fed-b"))
    primes = (*DEFAULT.data_primes, DEFAULT.special_prime)
    assert a.shape == (len(primes), DEFAULT.poly_degree)
    for row, q in zip(a, primes, strict=True):
        assert row.max() < q and row.max() > q * 0.99


def test_flooding_wider_than_a_word_is_drawn_in_two_parts() -> None:
    """2^88 does not fit int64: the single-word sampler refuses it, and the RNS sampler
    returns residues of x1 + 2^44·x2 whose spread is that of 2^88 (checked by CRT)."""
    import pytest

    from he_agg.sampling import SINGLE_WORD_FLOOD_BITS, flooding_noise_rns

    with pytest.raises(ValueError, match="64-bit word"):
        flooding_noise((4,), SINGLE_WORD_FLOOD_BITS + 1, 12)
    primes = (1152921504606830593, 1152921504606748673)  # 60-bit, so |F| < q1·q2/2 lifts
    residues = flooding_noise_rns((4096,), 88, 12, primes)
    q = primes[0] * primes[1]
    values = []
    for r0, r1 in zip(residues[0].tolist(), residues[1].tolist(), strict=True):
        v = (
            r0 * primes[1] * pow(primes[1], -1, primes[0])
            + r1 * primes[0] * pow(primes[0], -1, primes[1])
        ) % q
        values.append(v - q if v > q // 2 else v)
    spread = float(np.std(np.array(values, dtype=np.float64)))
    assert 0.9 * 2**88 < spread < 1.1 * 2**88
    assert max(abs(v) for v in values) <= 12 * 2**88 * (1 + 2**-44)
