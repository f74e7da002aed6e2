"""Helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import numpy as np
import tenseal.sealapi as sealapi

from he_agg import ntt
from he_agg.encoding import decode_aggregate
from he_agg.modarith import F64Array, U64Array
from he_agg.sampling import to_rns
from he_agg.seal_codec import (
    SealCiphertext,
    SealPlaintext,
    ciphertext_to_bytes,
    plaintext_from_bytes,
    plaintext_to_bytes,
)
from he_agg.seal_context import save_bytes, seal_context
from keys.committee import CommitteeSetup


def random_words(primes: tuple[int, ...], lead: tuple[int, ...], n: int, seed: int = 0) -> U64Array:
    rng = np.random.default_rng(seed)
    out = np.empty((*lead, len(primes), n), dtype=np.uint64)
    for j, q in enumerate(primes):
        out[..., j, :] = rng.integers(0, q, size=(*lead, n), dtype=np.uint64)
    return out


def summed_secret_key(setup: CommitteeSetup) -> object:
    """TEST ONLY: s = Σ s_i loaded as a SEAL SecretKey. No process of he-agg ever does this."""
    params = setup.params
    primes = (*params.data_primes, params.special_prime)
    total = sum(member.secret.coeffs.astype(np.int64) for member in setup.members)
    rns = to_rns(np.asarray(total), primes)
    words = np.stack([ntt.forward(rns[j], q) for j, q in enumerate(primes)])
    ctx = seal_context(params)
    plain = SealPlaintext(ctx.key_parms_id, words.reshape(-1), 1.0)
    return ctx.load(sealapi.SecretKey, plaintext_to_bytes(plain))


def decrypt_with_summed_key(setup: CommitteeSetup, words: U64Array) -> F64Array:
    """TEST ONLY: SEAL's Decryptor with the summed secret key decrypts and decodes words
    (C, 2, L, N); the reals of every block, in order."""
    params = setup.params
    ctx = setup.public.seal
    decryptor = sealapi.Decryptor(ctx.context, summed_secret_key(setup))
    out = []
    for block in words:
        cipher = ctx.load(
            sealapi.Ciphertext,
            ciphertext_to_bytes(SealCiphertext(ctx.data_parms_id, True, block, params.scale)),
        )
        plain = sealapi.Plaintext()
        decryptor.decrypt(cipher, plain)
        decrypted = plaintext_from_bytes(save_bytes(plain)).data
        shape = (1, len(params.data_primes), params.poly_degree)
        out.append(decode_aggregate(decrypted.reshape(shape), ctx)[: params.slots])
    return np.concatenate(out)
