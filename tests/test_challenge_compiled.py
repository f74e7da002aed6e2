"""The verifier's compiled challenge sums against the numpy reference, word for word."""

import numpy as np
import pytest

from he_agg import ntt
from he_agg import wellformed as wf
from he_agg.challenge_compiled import DIRECT_MAX_COUNT, challenge_sums
from he_agg.modarith import find_ntt_primes
from he_agg.params import DEFAULT, derive_parameters
from tests.helpers import random_words

N = 512
SHIPPED = sorted(
    set(DEFAULT.data_primes) | set(derive_parameters("default-no-proofs", proofs=False).data_primes)
)
# every shipped prime, and widths on both sides of the float sums' limit (bits + count ≤ 62)
PRIMES = SHIPPED + [find_ntt_primes(N, (width,))[0] for width in (20, 53, 54, 60)]
COUNTS = [1, 2, DIRECT_MAX_COUNT, DIRECT_MAX_COUNT + 1, 123, 255, 256]


def _matrix(rows: int, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(rows, count), dtype=np.uint8)


@pytest.mark.parametrize("q", PRIMES, ids=lambda q: f"{q.bit_length()}bit")
@pytest.mark.parametrize("count", COUNTS)
def test_challenge_sums_equal_the_reference(q: int, count: int) -> None:
    words = random_words((q,), (count,), N, seed=count)[:, 0]
    matrix = _matrix(wf.ROWS, count, seed=q % 1000)
    got = challenge_sums(matrix, words, q)
    np.testing.assert_array_equal(got, wf._combine_words_reference(matrix, words, q))
    assert got.dtype == np.uint64 and got.max() < q


@pytest.mark.parametrize("q", PRIMES, ids=lambda q: f"{q.bit_length()}bit")
@pytest.mark.parametrize("count", [DIRECT_MAX_COUNT, 256])
def test_the_largest_sums_are_reduced_exactly(q: int, count: int) -> None:
    """Every word q − 1 and every challenge bit set: the largest sum either path can meet."""
    words = np.full((count, N), q - 1, dtype=np.uint64)
    matrix = np.ones((8, count), dtype=np.uint8)
    expected = (count * (q - 1)) % q
    got = challenge_sums(matrix, words, q)
    assert (got == np.uint64(expected)).all()
    np.testing.assert_array_equal(got, wf._combine_words_reference(matrix, words, q))


def test_rows_with_no_challenge_bit_sum_to_zero() -> None:
    q = DEFAULT.data_primes[0]
    for count in (3, 200):
        words = random_words((q,), (count,), N)[:, 0]
        matrix = _matrix(4, count, seed=1)
        matrix[2] = 0
        assert not challenge_sums(matrix, words, q)[2].any()


def test_a_matrix_that_does_not_match_the_polynomials_is_refused() -> None:
    q = DEFAULT.data_primes[0]
    with pytest.raises(ValueError, match="challenge columns"):
        challenge_sums(_matrix(4, 3, 0), random_words((q,), (2,), N)[:, 0], q)


def test_verification_uses_the_compiled_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier's entry point returns the compiled words, and the reference's under
    HE_AGG_NTT=numpy (ntt.COMPILED false): the two paths are interchangeable."""
    q = DEFAULT.data_primes[1]
    words = random_words((q,), (130,), N)[:, 0]
    matrix = _matrix(wf.ROWS, 130, seed=3)
    compiled = wf._combine_words(matrix, words, q)
    monkeypatch.setattr(ntt, "COMPILED", False)
    np.testing.assert_array_equal(wf._combine_words(matrix, words, q), compiled)


def test_one_blas_thread_holds_blas_to_one_thread() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from he_agg.challenge_compiled import one_blas_thread

    with threadpool_limits(limits=2, user_api="blas"):  # restores this process's limits after
        one_blas_thread()
        blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert blas and set(blas) == {1}
