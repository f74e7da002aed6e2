"""Encryption with proofs: the path a parameter set with ``proofs`` takes.

Each block is encoded by :mod:`he_agg.ckks_encoder` (as the native backend does), encrypted by
:func:`he_agg.rlwe.encrypt_words` (or the torch backend's word-for-word equal kernel, on a
GPU: :func:`he_agg.backend.words_encryptor`) with fresh randomness from the OS CSPRNG, and the
randomness is used once more, to prove every c1 well formed (:mod:`he_agg.wellformed`);
then it is dropped. Only ciphertexts and proofs leave this module.
"""

from __future__ import annotations

import numpy as np

from he_agg import ckks_encoder, wellformed
from he_agg.backend import words_encryptor
from he_agg.backend.base import Progress
from he_agg.encoding import blocks
from he_agg.modarith import F64Array, U64Array
from he_agg.public import PublicContext
from he_agg.rlwe import EncryptionWitness, key_rows, sample_witness

__all__ = ["encode_blocks", "encrypt_for_proof", "encrypt_with_proofs"]


def encode_blocks(values: F64Array, public: PublicContext) -> U64Array:
    """CKKS plaintexts of every block of N reals at scale Δ, NTT form (C, L, N)."""
    params = public.params
    return ckks_encoder.encode(blocks(np.asarray(values, dtype=np.float64), params.slots), params)


def encrypt_for_proof(
    values: F64Array, public: PublicContext
) -> tuple[U64Array, EncryptionWitness]:
    """Words (C, 2, L, N) of ``values`` and the randomness that made them, to be proven
    (:func:`he_agg.wellformed.prove_upload`) and then dropped; it never leaves the client."""
    plain = encode_blocks(values, public)
    witness = sample_witness(plain.shape[0], public.params)
    encrypt = words_encryptor()  # rlwe.encrypt_words, or the torch backend's equal one
    return encrypt(plain, key_rows(public), witness, public.params), witness


def encrypt_with_proofs(
    values: F64Array,
    public: PublicContext,
    context: wellformed.ProofContext,
    progress: Progress | None = None,
) -> tuple[U64Array, tuple[bytes, ...]]:
    """Words (C, 2, L, N) and one proof per group of ≤ PROOF_GROUP ciphertexts."""
    words, witness = encrypt_for_proof(values, public)
    if progress is not None:
        progress(words.shape[0])
    return words, wellformed.prove_upload(words, witness, key_rows(public), public.params, context)
