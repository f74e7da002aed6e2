"""CKKS encoding without SEAL: the canonical embedding by numpy's FFT, residues and NTTs
compiled with numba. It replaces SEAL's CKKSEncoder on the client's hot path, where every
block would otherwise cross into SEAL and come back through SEAL's ``save`` (zstd) and our
parser: 2 ms a block against about 0.3 ms here.

A block of N reals r becomes N/2 complex slots z_j = r_j + i·r_{N/2+j} (complex packing,
as :mod:`he_agg.encoding`), and slot j sits at the root ζ^(3^j mod 2N) of X^N + 1, its
conjugate at ζ^(−3^j), as SEAL's CKKSEncoder places them (ζ = e^(iπ/N)). With v_l the value
at ζ^(2l+1), the real polynomial m with m(ζ^(2l+1)) = Δ·v_l is

    m_k = Δ/N · Re( ζ^(−k) · Σ_l v_l·e^(−2πi·lk/N) )

an FFT of length N and a twist. Each m_k is rounded to the nearest integer in float64, as
SEAL does (its precision, 53 bits, is SEAL's too), and reduced exactly modulo each data
prime: a rounded double is M·2^e with M < 2^53, and M·(2^e mod q) mod q is one Shoup
multiplication. Then the NTT of each row (:mod:`he_agg.ntt_compiled`, SEAL's NTT word for
word). The result is the plaintext words SEAL would give, except that its FFT and ours
round differently in the last bits of large coefficients; ``tests/test_ckks_encoder.py``
bounds that difference against SEAL's own plaintexts and has SEAL decode ours.
"""

from __future__ import annotations

import math
from functools import cache

import numba
import numpy as np
import numpy.typing as npt

from he_agg import ntt_compiled
from he_agg.errors import ParameterError
from he_agg.modarith import F64Array, U64Array
from he_agg.params import ParameterSet

__all__ = ["encode", "slot_order"]

_MAX_EXPONENT = 1024  # 2^e mod q for every exponent a finite double can have


@cache
def slot_order(poly_degree: int) -> npt.NDArray[np.int64]:
    """For slot j < N/2, the index l of its root ζ^(2l+1); the conjugates follow at N/2 + j."""
    m = 2 * poly_degree
    slots = poly_degree // 2
    order = np.empty(poly_degree, dtype=np.int64)
    pos = 1
    for j in range(slots):
        order[j] = (pos - 1) // 2
        order[slots + j] = (m - pos - 1) // 2
        pos = pos * 3 % m
    return order


@cache
def _twist(poly_degree: int) -> npt.NDArray[np.complex128]:
    k = np.arange(poly_degree)
    twist: npt.NDArray[np.complex128] = np.exp(-1j * np.pi * k / poly_degree)
    return twist


@cache
def _powers_of_two(q: int) -> tuple[U64Array, U64Array]:
    """2^e mod q for 0 ≤ e < 1024, and their Shoup quotients ⌊w·2^64/q⌋."""
    powers = [pow(2, e, q) for e in range(_MAX_EXPONENT)]
    return (
        np.array(powers, dtype=np.uint64),
        np.array([(w << 64) // q for w in powers], dtype=np.uint64),
    )


@numba.njit(cache=True, nogil=True)
def _residues(
    coeffs: F64Array, powers: U64Array, quotients: U64Array, q: np.uint64, out: U64Array
) -> None:  # pragma: no cover - compiled
    """Exact residues mod q of rounded doubles (integer-valued, finite)."""
    flat = coeffs.ravel()
    dest = out.ravel()
    for i in range(flat.size):
        value = flat[i]
        magnitude = abs(value)
        if magnitude < 9.007199254740992e15:  # below 2^53: an exact integer as it is
            residue = np.uint64(magnitude) % q
        else:
            mantissa, exponent = math.frexp(magnitude)  # magnitude = mantissa·2^exponent
            whole = np.uint64(mantissa * 9.007199254740992e15)  # mantissa·2^53, exact
            shift = exponent - 53
            residue = ntt_compiled._mulmod(whole, powers[shift], quotients[shift], q)
        if value < 0 and residue != 0:
            residue = q - residue
        dest[i] = residue


def _coefficients(chunks: F64Array, params: ParameterSet) -> F64Array:
    """Rounded coefficients Δ·m (C, N) of blocks (C, N) of reals."""
    n = params.poly_degree
    half = n // 2
    values = np.empty(chunks.shape, dtype=np.complex128)
    slots = chunks[:, :half] + 1j * chunks[:, half:]
    order = slot_order(n)
    values[:, order[:half]] = slots
    values[:, order[half:]] = np.conj(slots)
    spectrum = np.fft.fft(values, axis=1)
    coeffs: F64Array = np.rint((spectrum * _twist(n)).real * (params.scale / n))
    limit = 2.0 ** math.floor(params.modulus_bits)  # SEAL: below the data modulus
    if not np.isfinite(coeffs).all() or (coeffs.size and np.abs(coeffs).max() >= limit):
        raise ParameterError(
            "values", "the values are too large for this parameter set's modulus at scale Δ"
        )
    return coeffs


def encode(chunks: F64Array, params: ParameterSet) -> U64Array:
    """CKKS plaintexts of blocks (C, N) of reals at scale Δ, NTT form (C, L, N)."""
    chunks = np.asarray(chunks, dtype=np.float64)
    if chunks.ndim != 2 or chunks.shape[1] != params.poly_degree:
        raise ValueError("encode takes blocks of N reals, shape (C, N)")
    coeffs = _coefficients(chunks, params)
    count, n = coeffs.shape
    out = np.empty((count, len(params.data_primes), n), dtype=np.uint64)
    row = np.empty((count, n), dtype=np.uint64)
    for j, q in enumerate(params.data_primes):
        powers, quotients = _powers_of_two(q)
        _residues(coeffs, powers, quotients, np.uint64(q), row)
        out[:, j] = ntt_compiled.forward(row, q)
    return out
