"""The verifier's challenge sums Σ_i C_ji·c1_i mod q, compiled with numba.

A proof's verifier (:func:`he_agg.wellformed.verify`) needs, for each of its m rows and each
data prime, the sum of the c1 polynomials that the binary challenge selects. The numpy
reference (:func:`he_agg.wellformed._combine_words_reference`) splits every word into
25-bit halves, multiplies them by C with BLAS (exact in float64) and reduces with numpy's
modular helpers, several passes over (m, N) temporaries: it cost about 45 ms per prime
whatever the upload's size, two thirds of a one-ciphertext verification. Here:

* few ciphertexts (or primes too wide for the float sums): each row adds the selected
  c1's directly, one conditional subtraction per addition (exact for any q < 2^63);
* many: BLAS still multiplies the halves, and one compiled pass per prime rebuilds each
  sum s = hi·2^25 + lo (< 2^63 by the caller's bound) and reduces it with a float64
  quotient estimate, corrected until it lies in [0, q).

Both give the reference's words exactly; ``tests/test_challenge_compiled.py`` checks them
word for word on every prime width of the shipped sets, at counts on both sides of the
switch, and on words of q − 1 (the largest sums).
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from he_agg.modarith import U64Array

__all__ = ["DIRECT_MAX_COUNT", "challenge_sums", "one_blas_thread"]

DIRECT_MAX_COUNT = 48  # at or below, the direct sums beat BLAS here (measured, 1 core)
_HALF = 25  # low halves < 2^25: a sum of < 2^28 of them is exact in float64


@numba.njit(cache=True, nogil=True)
def _direct(
    matrix: npt.NDArray[np.uint8], words: U64Array, q: np.uint64, out: U64Array
) -> None:  # pragma: no cover - compiled
    rows, count = matrix.shape
    n = words.shape[1]
    for r in range(rows):
        row = out[r]
        for k in range(n):
            row[k] = 0
        for i in range(count):
            if matrix[r, i]:
                selected = words[i]
                for k in range(n):
                    s = row[k] + selected[k]
                    row[k] = s - q * np.uint64(s >= q)


@numba.njit(cache=True, nogil=True)
def _reduce_halves(
    low: npt.NDArray[np.float64],
    high: npt.NDArray[np.float64],
    q: np.uint64,
    inverse: float,
    out: U64Array,
) -> None:  # pragma: no cover - compiled
    rows, n = low.shape
    signed_q = np.int64(q)
    for r in range(rows):
        for k in range(n):
            s = (np.uint64(high[r, k]) << np.uint64(_HALF)) + np.uint64(low[r, k])
            estimate = np.uint64(np.float64(s) * inverse)
            t = np.int64(s - estimate * q)  # the estimate is off by at most one or two
            while t < 0:
                t += signed_q
            while t >= signed_q:
                t -= signed_q
            out[r, k] = np.uint64(t)


def challenge_sums(matrix: npt.NDArray[np.uint8], words: U64Array, q: int) -> U64Array:
    """Σ_i C_ji·words_i mod q for every row j: ``matrix`` (m, n) of 0/1, ``words`` (n, N)
    each < q < 2^63; (m, N) words in [0, q)."""
    rows, count = matrix.shape
    if words.shape[0] != count:
        raise ValueError(f"{count} challenge columns for {words.shape[0]} polynomials")
    out = np.empty((rows, words.shape[1]), dtype=np.uint64)
    # BLAS's sums: hi < count·2^(b−25) exact below 2^53, and s = hi·2^25 + lo below 2^63
    fits = q.bit_length() + count.bit_length() <= 62 and count < 1 << 28
    if count <= DIRECT_MAX_COUNT or not fits:
        contiguous = np.ascontiguousarray(words, dtype=np.uint64)
        _direct(np.ascontiguousarray(matrix, dtype=np.uint8), contiguous, np.uint64(q), out)
        return out
    c = matrix.astype(np.float64)  # the halves are read straight from a strided view
    low = (words & np.uint64((1 << _HALF) - 1)).astype(np.float64)
    high = (words >> np.uint64(_HALF)).astype(np.float64)
    _reduce_halves(c @ low, c @ high, np.uint64(q), 1.0 / q, out)
    return out


def one_blas_thread() -> None:
    """Hold BLAS to one thread in this process, for good: for processes that verify on
    threads of their own (the server's request threads, a member's), where BLAS's spinning
    threads fight them for the cores. The sums' product above took 55 ms on two BLAS
    threads against 35 ms on one while the other core was busy (27 and 32 ms when idle)."""
    threadpool_limits(1, user_api="blas")
