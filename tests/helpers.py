"""Helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import numpy as np
import tenseal.sealapi as sealapi

from he_agg import ntt
from he_agg.modarith import U64Array
from he_agg.sampling import to_rns
from he_agg.seal_codec import SealPlaintext, plaintext_to_bytes
from he_agg.seal_context import seal_context
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
