import dataclasses
import math

import pytest
import tenseal.sealapi as sealapi

from he_agg.errors import ParameterError
from he_agg.params import DEFAULT, HE_STANDARD_MAX_BITS, ParameterSet, derive_parameters


def _with(**changes: object) -> ParameterSet:
    fields = {f.name: getattr(DEFAULT, f.name) for f in dataclasses.fields(DEFAULT) if f.init}
    fields.update(changes)
    return ParameterSet(**fields)  # type: ignore[arg-type]


def test_security_table_matches_seal() -> None:
    for n, bits in HE_STANDARD_MAX_BITS.items():
        assert sealapi.CoeffModulus.MaxBitCount(n, sealapi.SEC_LEVEL_TYPE.TC128) == bits


def test_default_is_what_the_derivation_gives_and_meets_every_rule() -> None:
    assert derive_parameters() == DEFAULT
    DEFAULT.validate()
    assert DEFAULT.sigma_flood >= DEFAULT.required_flood_sigma()
    assert DEFAULT.upload_bytes_per_parameter() <= 24


def test_derivation_picks_the_smallest_ring_that_fits() -> None:
    # N=2048 allows 54 bits in all, far below what the flooding rule needs.
    assert DEFAULT.poly_degree == 4096
    bigger = derive_parameters("big", k_max=1000, value_bits=20, precision_bits=40)
    assert bigger.poly_degree == 8192


def test_derivation_uses_no_more_data_bits_than_needed() -> None:
    smaller_bits = tuple(b - 1 for b in DEFAULT.prime_bits)
    with pytest.raises(ParameterError):
        from he_agg.modarith import find_ntt_primes

        _with(data_primes=find_ntt_primes(DEFAULT.poly_degree, smaller_bits))


def test_flooding_below_the_rule_is_refused() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(flood_bits=DEFAULT.flood_bits - 1)
    assert caught.value.rule == "flooding"


def test_statistical_security_below_40_is_refused() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(stat_security=39)
    assert caught.value.rule == "flooding"


def test_too_many_modulus_bits_breaks_security() -> None:
    from he_agg.modarith import find_ntt_primes

    with pytest.raises(ParameterError) as caught:
        _with(special_prime=find_ntt_primes(4096, (20,))[0])  # 47+46+20 = 113 > 109
    assert caught.value.rule == "security"


def test_non_ntt_prime_breaks_security() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(special_prime=65521)  # prime, but not ≡ 1 mod 8192
    assert caught.value.rule == "security"


def test_too_small_scale_breaks_precision() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(scale_bits=DEFAULT.scale_bits - 1)
    assert caught.value.rule == "precision"


def test_too_large_value_bound_breaks_headroom() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(value_bits=DEFAULT.value_bits + 3, precision_bits=DEFAULT.precision_bits + 3)
    assert caught.value.rule == "headroom"


def test_fingerprint_is_stable_and_changes_with_every_field() -> None:
    assert DEFAULT.fingerprint == derive_parameters().fingerprint
    assert len(DEFAULT.fingerprint) == 32
    variants = [_with(name="other"), _with(tau=512), _with(k_max=999)]
    assert len({DEFAULT.fingerprint, *(v.fingerprint for v in variants)}) == 4


def test_rule_numbers_for_the_default() -> None:
    # B_ct ≈ K·N·n/2 for SEAL's mod-switched public-key encryption.
    expected = 1000 * (4096 * 8 / 2)
    assert math.isclose(DEFAULT.aggregate_noise_bound(), expected, rel_tol=0.01)
    assert (
        DEFAULT.expected_max_error()
        <= 2.0 ** (DEFAULT.value_bits - DEFAULT.precision_bits) * 1.000001
    )
