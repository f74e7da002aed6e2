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

import numpy as np

from he_agg import encrypt_compiled, ntt_compiled
from he_agg.modarith import U64Array, add_mod, mul_mod_shoup, shoup, sub_mod
from he_agg.params import ParameterSet
from he_agg.public import PublicContext
from he_agg.rlwe import EncryptionWitness, KeyRows, check_inputs, key_rows
from he_agg.sampling import to_rns

__all__ = ["encrypt_divided", "encrypt_divided_reference", "key_level_rows"]


def key_level_rows(public: PublicContext) -> KeyRows:
    """Every row of the collective key (b, a): the data primes, then the special prime."""
    return key_rows(public, key_level=True)


def encrypt_divided_reference(
    plain: U64Array, key: KeyRows, witness: EncryptionWitness, params: ParameterSet
) -> U64Array:
    """The numpy composition of the formula above (the reference for the compiled kernel);
    words (C, 2, L, N)."""
    check_inputs(plain, key, witness, params, key_level=True)
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


def encrypt_divided(
    plain: U64Array, key: KeyRows, witness: EncryptionWitness, params: ParameterSet
) -> U64Array:
    """(c0, c1) of each encoded block ``plain`` (C, L, N, NTT form) as SEAL's Encryptor
    makes them, with the randomness ``witness``; words (C, 2, L, N) in SEAL's layout.
    Compiled; word for word :func:`encrypt_divided_reference`."""
    check_inputs(plain, key, witness, params, key_level=True)
    return encrypt_compiled.encrypt_rows(plain, key, witness, divide=True)
