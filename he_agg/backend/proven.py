"""Encryption with proofs: the path a parameter set with ``proofs`` takes.

Each block is encoded by SEAL's CKKSEncoder (as the SEAL backend does), encrypted by
:func:`he_agg.rlwe.encrypt_words` with fresh randomness from the OS CSPRNG, and the
randomness is used once more, to prove every c1 well formed (:mod:`he_agg.wellformed`);
then it is dropped. Only ciphertexts and proofs leave this module.
"""

from __future__ import annotations

import numpy as np

from he_agg import wellformed
from he_agg.backend.base import Progress
from he_agg.backend.seal import SealBackend
from he_agg.encoding import blocks
from he_agg.modarith import F64Array, U64Array
from he_agg.public import PublicContext
from he_agg.rlwe import encrypt_words, key_rows, sample_witness
from he_agg.seal_codec import plaintext_from_bytes
from he_agg.seal_context import save_bytes

__all__ = ["encode_blocks", "encrypt_with_proofs"]

_encoder = SealBackend()


def encode_blocks(values: F64Array, public: PublicContext) -> U64Array:
    """CKKS plaintexts of every block of N reals at scale Δ, NTT form (C, L, N)."""
    params = public.params
    chunks = blocks(np.asarray(values, dtype=np.float64), params.slots)
    shape = (len(params.data_primes), params.poly_degree)
    return np.stack(
        [
            plaintext_from_bytes(save_bytes(_encoder.encode(block, public))).data.reshape(shape)
            for block in chunks
        ]
    )


def encrypt_with_proofs(
    values: F64Array,
    public: PublicContext,
    context: wellformed.ProofContext,
    progress: Progress | None = None,
) -> tuple[U64Array, tuple[bytes, ...]]:
    """Words (C, 2, L, N) and one proof per group of ≤ PROOF_GROUP ciphertexts."""
    params = public.params
    plain = encode_blocks(values, public)
    witness = sample_witness(plain.shape[0], params)
    key = key_rows(public)
    words = encrypt_words(plain, key, witness, params)
    if progress is not None:
        progress(plain.shape[0])
    return words, wellformed.prove_upload(words, witness, key, params, context)
