import numpy as np
import pytest
import tenseal.sealapi as sealapi
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.modarith import (
    add_mod,
    find_ntt_primes,
    is_prime,
    mul_mod_shoup,
    mulhi,
    neg_mod,
    shoup,
    sub_mod,
    sum_rns,
)

PRIMES = [2**61 - 1, (1 << 60) - 93, 1152921504606830593, 140737488273409, 40961, 65537]
words = st.integers(min_value=0, max_value=2**64 - 1)


@given(st.lists(st.tuples(words, words), min_size=1, max_size=50))
def test_mulhi_is_the_high_half_of_the_product(pairs: list[tuple[int, int]]) -> None:
    a = np.array([p[0] for p in pairs], dtype=np.uint64)
    b = np.array([p[1] for p in pairs], dtype=np.uint64)
    got = mulhi(a, b & np.uint64(0xFFFFFFFF), b >> np.uint64(32))
    assert got.tolist() == [(x * y) >> 64 for x, y in pairs]


@settings(max_examples=60)
@given(st.sampled_from(PRIMES), st.data())
def test_modular_ops_match_python_integers(q: int, data: st.DataObject) -> None:
    values = st.integers(min_value=0, max_value=q - 1)
    a_list = data.draw(st.lists(values, min_size=1, max_size=40))
    b_list = data.draw(st.lists(values, min_size=len(a_list), max_size=len(a_list)))
    a = np.array(a_list, dtype=np.uint64)
    b = np.array(b_list, dtype=np.uint64)
    assert mul_mod_shoup(a, shoup(b, q), q).tolist() == [
        x * y % q for x, y in zip(a_list, b_list, strict=True)
    ]
    assert add_mod(a, b, q).tolist() == [(x + y) % q for x, y in zip(a_list, b_list, strict=True)]
    assert sub_mod(a, b, q).tolist() == [(x - y) % q for x, y in zip(a_list, b_list, strict=True)]
    assert neg_mod(a, q).tolist() == [(-x) % q for x in a_list]


@pytest.mark.parametrize("q", [2**61 - 1, 1125899906826241, 140737488273409, 40961])
def test_extreme_operands_on_both_paths(q: int) -> None:
    # 2^50 − 2^14·k + 1 is the largest prime the floating-point path takes.
    a = np.array([0, 1, q - 1, q - 2, q // 2, q // 2 + 1], dtype=np.uint64)
    for w in (1, 2, q - 1, q - 2, q // 2):
        got = mul_mod_shoup(a, shoup(np.array(w), q), q).tolist()
        assert got == [int(x) * w % q for x in a]


def test_sum_rns_reduces_per_prime() -> None:
    primes = (97, 193)
    a = np.array([[96, 1], [192, 5]], dtype=np.uint64)
    assert sum_rns([a, a, a], primes).tolist() == [[(96 * 3) % 97, 3], [(192 * 3) % 193, 15]]


def test_is_prime_agrees_with_known_values() -> None:
    assert [n for n in range(50) if is_prime(n)] == [
        2,
        3,
        5,
        7,
        11,
        13,
        17,
        19,
        23,
        29,
        31,
        37,
        41,
        43,
        47,
    ]
    assert is_prime(2**61 - 1) and not is_prime(2**61 + 1)
    assert not is_prime(3215031751)  # strong pseudoprime to bases 2, 3, 5, 7


@pytest.mark.parametrize(
    ("n", "bits"),
    [
        (4096, (47, 46, 16)),
        (8192, (60, 40, 40)),
        (8192, (48, 48, 60)),
        (2048, (27, 27)),
        (16384, (50, 50, 50, 60)),
    ],
)
def test_prime_search_matches_seal(n: int, bits: tuple[int, ...]) -> None:
    assert find_ntt_primes(n, bits) == tuple(
        m.value() for m in sealapi.CoeffModulus.Create(n, list(bits))
    )
