"""SEAL's public-key encryption, re-implemented: what a parameter set without proofs uploads.

SEAL's ``Encryptor`` (``encrypt_zero_asymmetric`` then ``divide_and_round_q_last_ntt_inplace``,
SEAL 4.x ``encryptor.cpp`` and ``rns.cpp``) encrypts zero at the key level, modulo
q·p (the data primes and the special prime p), with the key (b, a):

    c'0 = b·u + e0,    c'1 = a·u + e1                     (mod q·p)

u ternary, e0 and e1 small; then divides by p with rounding and drops p,

    c_k = (c'_k − r_k)·p⁻¹ mod q,   r_k = ((c'_k mod p) + ⌊p/2⌋ mod p) − ⌊p/2⌋

and adds the plaintext to c0. This module computes the same function of (u, e0, e1) with
the compiled NTT (:mod:`he_agg.ntt_compiled`, SEAL's NTT word for word), so the noise is
SEAL's divided noise, the one the rules of a set without proofs are derived for
(:func:`he_agg.noise.fresh_noise_bound`: ‖e_pk·u + e0 + e1·s‖∞/p plus the rounding, for any
ternary u and ‖e‖∞ ≤ B_e; our samplers give |e| ≤ 19 ≤ B_e). What it saves is SEAL's
``save`` (zstd) and our parse of every ciphertext, the only way out of TenSEAL's bindings.

Randomness comes from :func:`he_agg.rlwe.sample_witness` (the OS CSPRNG). The tests check
the words against a big-integer reference of the formula above and have SEAL decrypt them
with the summed test key (``tests/test_seal_encryption.py``).
"""

from __future__ import annotations

import hashlib
import threading
from functools import cache

import numba
import numpy as np
import numpy.typing as npt

from he_agg import ntt_compiled
from he_agg.modarith import U64Array, add_mod, mul_mod_shoup, shoup, sub_mod
from he_agg.params import ParameterSet
from he_agg.public import PublicContext
from he_agg.rlwe import EncryptionWitness, KeyRows
from he_agg.sampling import to_rns

__all__ = ["encrypt_divided", "encrypt_divided_reference", "key_level_rows"]

_KEEP = 4
_recent: dict[tuple[bytes, bytes], KeyRows] = {}
_recent_lock = threading.Lock()


def key_level_rows(public: PublicContext) -> KeyRows:
    """Every row of the collective key (b, a): the data primes, then the special prime.
    The last few keys are kept, with the Shoup quotients the kernel needs (once per key)."""
    params = public.params
    data = np.ascontiguousarray(public.public_key.data)
    name = (params.fingerprint, hashlib.sha256(data.tobytes()).digest())
    with _recent_lock:
        rows = _recent.pop(name, None)
        if rows is None:
            rows = KeyRows(data[0], data[1], (*params.data_primes, params.special_prime))
            rows.a_quotients, rows.b_quotients  # noqa: B018 - computed now, under the lock
        _recent[name] = rows  # most recent last
        while len(_recent) > _KEEP:
            _recent.pop(next(iter(_recent)))
    return rows


def _check(plain: U64Array, key: KeyRows, witness: EncryptionWitness, params: ParameterSet) -> None:
    if key.primes != (*params.data_primes, params.special_prime):
        raise ValueError("encrypt_divided needs the key's rows at every key-level prime")
    if plain.shape != (len(witness), len(params.data_primes), params.poly_degree):
        raise ValueError("the plaintexts and the witness disagree in shape")


def encrypt_divided_reference(
    plain: U64Array, key: KeyRows, witness: EncryptionWitness, params: ParameterSet
) -> U64Array:
    """The numpy composition of the formula above (the reference for the compiled kernel);
    words (C, 2, L, N)."""
    _check(plain, key, witness, params)
    primes = params.data_primes
    p = params.special_prime
    levels = len(primes)
    half = p >> 1
    u_rows = to_rns(witness.u.astype(np.int64), key.primes)  # (C, L+1, N)
    u_ntt = [ntt_compiled.forward(u_rows[:, j], q) for j, q in enumerate(key.primes)]
    out = np.empty((len(witness), 2, levels, params.poly_degree), dtype=np.uint64)
    for part, (error, times) in enumerate(((witness.e0, key.b_times), (witness.e1, key.a_times))):
        # the special prime's row, in coefficients, with e and the rounding's ⌊p/2⌋ added
        last = ntt_compiled.inverse(times(u_ntt[levels], levels, p), p)
        last = add_mod(last, to_rns(error.astype(np.int64), (p,))[:, 0], p)
        last = add_mod(last, np.full_like(last, half), p)
        for j, q in enumerate(primes):
            # r ≡ last − ⌊p/2⌋ (mod q); c_j = (K_j·u + NTT(e − r))·p⁻¹
            r = last % np.uint64(q) if p > q else last
            r = sub_mod(r, np.full_like(r, half % q), q)
            moved = ntt_compiled.forward(sub_mod(to_rns(error, (q,))[:, 0], r, q), q)
            total = add_mod(times(u_ntt[j], j, q), moved, q)
            out[:, part, j] = mul_mod_shoup(total, shoup(pow(p, -1, q), q), q)
    out[:, 0] = add_mod(out[:, 0], plain, np.array(primes, dtype=np.uint64).reshape(-1, 1))
    return out


@numba.njit(cache=True, inline="always")
def _residue(v: np.int64, q: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    return np.uint64(v + np.int64(q)) if v < 0 else np.uint64(v)


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
    out: U64Array,
) -> None:  # pragma: no cover - compiled
    """The formula for every ciphertext, one row at a time. ``key`` (2, L+1, N) with its
    Shoup quotients; tables (L+1, N) per prime; ``scalars`` (L+1, 4): n⁻¹ and its quotient
    (the special prime's row), p⁻¹ mod q_j and its quotient (the data primes' rows)."""
    count, n = u.shape
    levels = primes.size - 1
    p = primes[levels]
    half = p >> np.uint64(1)
    u_ntt = np.empty((levels + 1, n), dtype=np.uint64)
    last = np.empty((1, n), dtype=np.uint64)
    moved = np.empty((1, n), dtype=np.uint64)
    for c in range(count):
        for j in range(levels + 1):
            q = primes[j]
            for k in range(n):
                u_ntt[j, k] = _residue(np.int64(u[c, k]), q)
            ntt_compiled._forward(u_ntt[j : j + 1], roots[j], root_quotients[j], q)
        for part in range(2):
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
                for k in range(n):
                    r = last[0, k] % q
                    r = r - half_q + q * np.uint64(r < half_q)
                    e = _residue(errors[part, c, k], q)
                    moved[0, k] = e - r + q * np.uint64(e < r)
                ntt_compiled._forward(moved, roots[j], root_quotients[j], q)
                for k in range(n):
                    t = ntt_compiled._mulmod(
                        u_ntt[j, k], key[part, j, k], key_quotients[part, j, k], q
                    )
                    t = t + moved[0, k]
                    t = t - q * np.uint64(t >= q)
                    t = ntt_compiled._mulmod(t, scalars[j, 2], scalars[j, 3], q)
                    if part == 0:
                        t = t + plain[c, j, k]
                        t = t - q * np.uint64(t >= q)
                    out[c, part, j, k] = t


@cache
def _tables(
    primes: tuple[int, ...], n: int
) -> tuple[U64Array, U64Array, U64Array, U64Array, U64Array]:
    """The NTT tables of every key-level prime, stacked, and the kernel's scalars."""
    roots, quots, inverse_roots, inverse_quots, scalars = [], [], [], [], []
    p = primes[-1]
    for q in primes:
        forward, forward_q, inverse, inverse_q, n_inv, n_inv_q = ntt_compiled._tables(q, n)
        roots.append(forward)
        quots.append(forward_q)
        inverse_roots.append(inverse)
        inverse_quots.append(inverse_q)
        p_inv = pow(p, -1, q) if q != p else 0
        scalars.append([n_inv, n_inv_q, p_inv, (p_inv << 64) // q])
    return (
        np.stack(roots),
        np.stack(quots),
        np.stack(inverse_roots),
        np.stack(inverse_quots),
        np.array(scalars, dtype=np.uint64),
    )


def encrypt_divided(
    plain: U64Array, key: KeyRows, witness: EncryptionWitness, params: ParameterSet
) -> U64Array:
    """(c0, c1) of each encoded block ``plain`` (C, L, N, NTT form) as SEAL's Encryptor
    makes them, with the randomness ``witness``; words (C, 2, L, N) in SEAL's layout.
    Compiled; word for word :func:`encrypt_divided_reference`."""
    _check(plain, key, witness, params)
    n = params.poly_degree
    out = np.empty((len(witness), 2, len(params.data_primes), n), dtype=np.uint64)
    roots, quotients, inverse_roots, inverse_quotients, scalars = _tables(key.primes, n)
    _encrypt_rows(
        np.ascontiguousarray(witness.u),
        np.stack([witness.e0, witness.e1]).astype(np.int64),
        np.ascontiguousarray(plain, dtype=np.uint64),
        np.stack([key.b, key.a]),
        np.stack([np.stack(key.b_quotients), np.stack(key.a_quotients)]),
        np.array(key.primes, dtype=np.uint64),
        roots,
        quotients,
        inverse_roots,
        inverse_quotients,
        scalars,
        out,
    )
    return out
