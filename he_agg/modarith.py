"""Exact arithmetic modulo word-sized primes (< 2^61) on numpy uint64 arrays.

numpy has no 128-bit integer, so products go through Shoup's method: for a fixed
multiplicand w we precompute w' = floor(w·2^64 / q); then a·w mod q is
a·w − mulhi(a, w')·q (mod 2^64), followed by one conditional subtraction.
The high half of a 64×64 product is built from 32-bit limbs, which is exact and portable.

For primes below 2^50 a cheaper estimate does: a < 2^50 is exact in a double, and
a·(w/q) in floating point is within 1/4 of the true quotient, so a·w − ⌊estimate⌋·q
(mod 2^64) lies in [−q, 2q) and one correction each way makes it exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_PRIME_BITS",
    "F64Array",
    "ShoupConstant",
    "U64Array",
    "add_mod",
    "add_rns",
    "find_ntt_primes",
    "is_prime",
    "mul_mod_shoup",
    "mulhi",
    "neg_mod",
    "rns_moduli",
    "shoup",
    "sub_mod",
    "sum_rns",
]

U64Array = npt.NDArray[np.uint64]
F64Array = npt.NDArray[np.float64]
MAX_PRIME_BITS = 60
FLOAT_PATH_BITS = 50
_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def mulhi(a: U64Array, b_lo: U64Array, b_hi: U64Array) -> U64Array:
    """High 64 bits of a·b, where b is given as its 32-bit limbs (b_lo, b_hi)."""
    a_lo = a & _LOW32
    a_hi = a >> _S32
    lo_lo = a_lo * b_lo
    lo_hi = a_lo * b_hi
    hi_lo = a_hi * b_lo
    middle = (lo_lo >> _S32) + (lo_hi & _LOW32) + (hi_lo & _LOW32)  # < 3·2^32, no overflow
    out: U64Array = a_hi * b_hi + (lo_hi >> _S32) + (hi_lo >> _S32) + (middle >> _S32)
    return out


@dataclass(frozen=True)
class ShoupConstant:
    """A fixed multiplicand w with its Shoup quotient, broadcastable against the operand."""

    value: U64Array
    quotient_lo: U64Array
    quotient_hi: U64Array
    ratio: npt.NDArray[np.float64]  # w / q, for the floating-point path


def shoup(w: npt.ArrayLike, q: int) -> ShoupConstant:
    """Precompute floor(w·2^64/q) (and w/q) for every entry of w (entries must be < q)."""
    values = np.asarray(w, dtype=np.uint64)
    if q.bit_length() <= FLOAT_PATH_BITS:
        empty = np.zeros((1,) * values.ndim, dtype=np.uint64)
        return ShoupConstant(values, empty, empty, values.astype(np.float64) / float(q))
    flat = values.reshape(-1).tolist()
    quotients = np.fromiter(((int(x) << 64) // q for x in flat), dtype=np.uint64, count=len(flat))
    quotients = quotients.reshape(values.shape)
    return ShoupConstant(values, quotients & _LOW32, quotients >> _S32, np.zeros(1))


def mul_mod_shoup(a: U64Array, w: ShoupConstant, q: int) -> U64Array:
    """a·w mod q for a in [0, q), exact for q < 2^63."""
    qq = np.uint64(q)
    if q.bit_length() <= FLOAT_PATH_BITS:
        estimate = (a.astype(np.float64) * w.ratio).astype(np.uint64)
        r: U64Array = a * w.value - estimate * qq  # in [−q, 2q) as a signed value
        signed = r.view(np.int64)
        r += qq * (signed < 0)
        r -= qq * (r >= qq)
        return r
    estimate = mulhi(a, w.quotient_lo, w.quotient_hi)
    r = a * w.value - estimate * qq  # wraps mod 2^64; true value lies in [0, 2q)
    r -= qq * (r >= qq)
    return r


def add_mod(a: U64Array, b: U64Array, q: int | U64Array) -> U64Array:
    """(a + b) mod q for a, b in [0, q) and q < 2^63 (q may be an array that broadcasts)."""
    qq = np.uint64(q) if isinstance(q, int) else q
    s: U64Array = a + b
    s -= qq * (s >= qq)
    return s


def sub_mod(a: U64Array, b: U64Array, q: int) -> U64Array:
    """(a − b) mod q for a, b in [0, q)."""
    qq = np.uint64(q)
    d: U64Array = a - b + qq * (a < b)
    return d


def neg_mod(a: U64Array, q: int) -> U64Array:
    qq = np.uint64(q)
    out: U64Array = (qq - a) * (a != 0)
    return out


def rns_moduli(primes: tuple[int, ...]) -> U64Array:
    """The primes shaped (L, 1), to broadcast against words (..., L, N)."""
    return np.array(primes, dtype=np.uint64).reshape(-1, 1)


def add_rns(a: U64Array, b: U64Array, primes: tuple[int, ...]) -> U64Array:
    """(a + b) mod q_j for words (..., L, N) whose axis −2 runs over the primes."""
    return add_mod(a, b, rns_moduli(primes))


def sum_rns(terms: Sequence[U64Array], primes: tuple[int, ...]) -> U64Array:
    """Σ terms mod q_j; raises on an empty sequence."""
    if not terms:
        raise ValueError("nothing to add")
    total = terms[0].copy()
    for term in terms[1:]:
        total = add_rns(total, term, primes)
    return total


_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)  # deterministic below 3.3·10^24


def is_prime(n: int) -> bool:
    """Deterministic Miller–Rabin for n < 3.3·10^24 (covers every 64-bit word)."""
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _primes_below(step: int, bits: int, count: int) -> list[int]:
    """The ``count`` largest primes ≡ 1 mod step of exactly ``bits`` bits, descending."""
    found: list[int] = []
    candidate = ((1 << bits) - 1) // step * step + 1
    while len(found) < count:
        if candidate <= 1 << (bits - 1):
            raise ValueError(f"not enough {bits}-bit primes ≡ 1 mod {step}")
        if is_prime(candidate):
            found.append(candidate)
        candidate -= step
    return found


def find_ntt_primes(poly_degree: int, bit_sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Primes ≡ 1 mod 2N of the given bit sizes, chosen exactly as SEAL's
    ``CoeffModulus::Create`` chooses them (checked in tests): for each size it finds the
    largest primes, then hands them out from the smallest up, in the order sizes appear.
    """
    for bits in bit_sizes:
        if not 2 <= bits <= MAX_PRIME_BITS:
            raise ValueError(f"prime size {bits} bits is outside 2..{MAX_PRIME_BITS}")
    pools = {
        bits: _primes_below(2 * poly_degree, bits, bit_sizes.count(bits)) for bits in set(bit_sizes)
    }
    return tuple(pools[bits].pop() for bits in bit_sizes)
