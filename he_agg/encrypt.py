"""Public-key encryption of real vectors under the collective key, through SEAL.

Clients hold no secret: the SEAL Encryptor is built from the public key alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from he_agg.encoding import F64Array, blocks, encode_block
from he_agg.errors import SealFormatError
from he_agg.modarith import U64Array
from he_agg.params import ParameterSet
from he_agg.seal_codec import SealCiphertext, ciphertext_from_bytes, ciphertext_to_bytes
from he_agg.seal_context import SealContext, save_bytes, seal_context

__all__ = ["PublicContext", "encrypt_vector"]


@dataclass(frozen=True)
class PublicContext:
    """What a client needs to encrypt: the parameter set and the collective public key."""

    params: ParameterSet
    public_key: SealCiphertext

    def __post_init__(self) -> None:
        ctx = seal_context(self.params)
        pk = self.public_key
        expected = (2, len(self.params.data_primes) + 1, self.params.poly_degree)
        if pk.parms_id != ctx.key_parms_id or pk.data.shape != expected or not pk.is_ntt_form:
            raise SealFormatError("public key does not belong to this parameter set's key level")

    @property
    def seal(self) -> SealContext:
        return seal_context(self.params)

    @cached_property
    def encryptor(self) -> Any:
        key = self.seal.load(sealapi.PublicKey, ciphertext_to_bytes(self.public_key))
        return sealapi.Encryptor(self.seal.context, key)

    @cached_property
    def encoder(self) -> Any:
        return sealapi.CKKSEncoder(self.seal.context)


def encrypt_vector(
    values: F64Array,
    public: PublicContext,
    progress: Callable[[int], None] | None = None,
) -> U64Array:
    """Encrypt a flat real vector; returns words (C, 2, L, N) in NTT form."""
    chunks = blocks(np.asarray(values, dtype=np.float64), public.params.slots)
    params = public.params
    out = np.empty((chunks.shape[0], 2, len(params.data_primes), params.poly_degree), np.uint64)
    cipher = sealapi.Ciphertext()
    for index, block in enumerate(chunks):
        public.encryptor.encrypt(encode_block(block, public.seal, public.encoder), cipher)
        out[index] = ciphertext_from_bytes(save_bytes(cipher)).data
        if progress is not None:
            progress(1)
    return out
