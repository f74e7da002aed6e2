"""Public-key encryption compiled with numba: one pass per ciphertext, for both formulas.

* undivided (:func:`he_agg.rlwe.encrypt_words`, what the proofs speak of): modulo the data
  primes, c0 = b·u + e0 + m, c1 = a·u + e1;
* divided (:func:`he_agg.seal_encryption.encrypt_divided`, SEAL's Encryptor): modulo the
  data primes and the special prime p, then divided by p with rounding.

The same words as the numpy compositions in those modules (their ``*_reference``
functions), which ``tests/test_seal_encryption.py`` checks word for word, without their
(C, L, N) temporaries: the NTTs and Shoup products of :mod:`he_agg.ntt_compiled`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import numba
import numpy as np
import numpy.typing as npt

from he_agg import ntt_compiled
from he_agg.modarith import U64Array

if TYPE_CHECKING:  # rlwe imports this module
    from he_agg.rlwe import EncryptionWitness, KeyRows

__all__ = ["encrypt_rows"]


@numba.njit(cache=True, inline="always")
def _residue(v: np.int64, q: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """v mod q in [0, q) for any int64 v (small ones without a division)."""
    signed = np.int64(q)
    if -signed < v < signed:
        return np.uint64(v + signed) if v < 0 else np.uint64(v)
    r = v % signed
    return np.uint64(r + signed) if r < 0 else np.uint64(r)


@numba.njit(cache=True, nogil=True)
def _encrypt_rows(
    u: npt.NDArray[np.int8],
    errors: npt.NDArray[np.int64],
    plain: U64Array,
    key: U64Array,
    key_quotients: U64Array,
    primes: U64Array,
    roots: U64Array,
    root_quotients: U64Array,
    inverse_roots: U64Array,
    inverse_quotients: U64Array,
    scalars: U64Array,
    divide: bool,
    out: U64Array,
) -> None:  # pragma: no cover - compiled
    """The formula for every ciphertext, one row at a time. ``key`` (2, K, N) with its
    Shoup quotients; tables (K, N) per prime; ``scalars`` (K, 4): n⁻¹ and its quotient
    (the special prime's row), p⁻¹ mod q_j and its quotient (the data primes' rows). With
    ``divide`` the last of the K primes is p; without, all K are data primes."""
    count, n = u.shape
    levels = primes.size - 1 if divide else primes.size
    p = primes[primes.size - 1]
    half = p >> np.uint64(1)
    u_ntt = np.empty((primes.size, n), dtype=np.uint64)
    last = np.empty((1, n), dtype=np.uint64)
    moved = np.empty((1, n), dtype=np.uint64)
    for c in range(count):
        for j in range(primes.size):
            q = primes[j]
            for k in range(n):
                u_ntt[j, k] = _residue(np.int64(u[c, k]), q)
            ntt_compiled._forward(u_ntt[j : j + 1], roots[j], root_quotients[j], q)
        for part in range(2):
            if divide:  # the special prime's row in coefficients, e and ⌊p/2⌋ added
                for k in range(n):
                    last[0, k] = ntt_compiled._mulmod(
                        u_ntt[levels, k], key[part, levels, k], key_quotients[part, levels, k], p
                    )
                ntt_compiled._inverse(
                    last,
                    inverse_roots[levels],
                    inverse_quotients[levels],
                    p,
                    scalars[levels, 0],
                    scalars[levels, 1],
                )
                for k in range(n):
                    x = last[0, k] + _residue(errors[part, c, k], p)
                    x = x - p * np.uint64(x >= p)
                    x = x + half
                    last[0, k] = x - p * np.uint64(x >= p)
            for j in range(levels):
                q = primes[j]
                half_q = half % q
                for k in range(n):  # e, less r ≡ last − ⌊p/2⌋ (mod q) when dividing
                    e = _residue(errors[part, c, k], q)
                    if divide:
                        r = last[0, k] % q
                        r = r - half_q + q * np.uint64(r < half_q)
                        e = e - r + q * np.uint64(e < r)
                    moved[0, k] = e
                ntt_compiled._forward(moved, roots[j], root_quotients[j], q)
                for k in range(n):  # K_j·u + NTT(e − r), times p⁻¹ when dividing, + m in c0
                    t = ntt_compiled._mulmod(
                        u_ntt[j, k], key[part, j, k], key_quotients[part, j, k], q
                    )
                    t = t + moved[0, k]
                    t = t - q * np.uint64(t >= q)
                    if divide:
                        t = ntt_compiled._mulmod(t, scalars[j, 2], scalars[j, 3], q)
                    if part == 0:
                        t = t + plain[c, j, k]
                        t = t - q * np.uint64(t >= q)
                    out[c, part, j, k] = t


@cache
def _tables(
    primes: tuple[int, ...], n: int, divide: bool
) -> tuple[U64Array, U64Array, U64Array, U64Array, U64Array]:
    """The NTT tables of every prime, stacked, and the kernel's scalars."""
    roots, quots, inverse_roots, inverse_quots, scalars = [], [], [], [], []
    p = primes[-1]
    for q in primes:
        forward, forward_q, inverse, inverse_q, n_inv, n_inv_q = ntt_compiled._tables(q, n)
        roots.append(forward)
        quots.append(forward_q)
        inverse_roots.append(inverse)
        inverse_quots.append(inverse_q)
        p_inv = pow(p, -1, q) if divide and q != p else 1
        scalars.append([n_inv, n_inv_q, p_inv, (p_inv << 64) // q])
    return (
        np.stack(roots),
        np.stack(quots),
        np.stack(inverse_roots),
        np.stack(inverse_quots),
        np.array(scalars, dtype=np.uint64),
    )


def encrypt_rows(
    plain: U64Array, key: KeyRows, witness: EncryptionWitness, divide: bool
) -> U64Array:
    """Words (C, 2, L, N) of plaintexts ``plain`` (C, L, N) under ``key`` with the randomness
    ``witness``. ``divide``: the key's last prime is SEAL's special prime p, divided out."""
    count, levels, n = plain.shape
    out = np.empty((count, 2, levels, n), dtype=np.uint64)
    roots, root_quotients, inverse_roots, inverse_quotients, scalars = _tables(
        key.primes, n, divide
    )
    _encrypt_rows(
        np.ascontiguousarray(witness.u, dtype=np.int8),
        np.stack([witness.e0, witness.e1]).astype(np.int64),
        np.ascontiguousarray(plain, dtype=np.uint64),
        np.stack([key.b, key.a]),
        np.stack([np.stack(key.b_quotients), np.stack(key.a_quotients)]),
        np.array(key.primes, dtype=np.uint64),
        roots,
        root_quotients,
        inverse_roots,
        inverse_quotients,
        scalars,
        divide,
        out,
    )
    return out
