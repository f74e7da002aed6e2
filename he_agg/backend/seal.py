"""The CPU backend: SEAL's own CKKSEncoder and public-key Encryptor (through TenSEAL)."""

from __future__ import annotations

from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from he_agg.backend.base import Progress
from he_agg.encoding import blocks, encode_block
from he_agg.modarith import F64Array, U64Array
from he_agg.public import PublicContext
from he_agg.seal_codec import ciphertext_from_bytes, ciphertext_to_bytes
from he_agg.seal_context import save_bytes

__all__ = ["SealBackend"]


class SealBackend:
    """Encrypts block by block with SEAL; keeps one Encryptor per public key."""

    name = "seal"

    def __init__(self) -> None:
        self._key: bytes | None = None
        self._encryptor: Any = None
        self._encoder: Any = None

    def _tools(self, public: PublicContext) -> tuple[Any, Any]:
        key = ciphertext_to_bytes(public.public_key)
        if key != self._key:
            loaded = public.seal.load(sealapi.PublicKey, key)
            self._encryptor = sealapi.Encryptor(public.seal.context, loaded)
            self._encoder = sealapi.CKKSEncoder(public.seal.context)
            self._key = key
        return self._encryptor, self._encoder

    def encode(self, block: F64Array, public: PublicContext) -> Any:
        """One block of N reals → a SEAL Plaintext at scale Δ (a stage of its own for bench)."""
        return encode_block(block, public.seal, self._tools(public)[1])

    def encrypt_plaintext(self, plain: Any, public: PublicContext) -> U64Array:
        """SEAL's public-key encryption of one encoded block; words (2, L, N)."""
        cipher = sealapi.Ciphertext()
        self._tools(public)[0].encrypt(plain, cipher)
        return ciphertext_from_bytes(save_bytes(cipher)).data

    def encrypt(
        self, values: F64Array, public: PublicContext, progress: Progress | None = None
    ) -> U64Array:
        params = public.params
        chunks = blocks(np.asarray(values, dtype=np.float64), params.slots)
        out = np.empty((chunks.shape[0], 2, len(params.data_primes), params.poly_degree), np.uint64)
        for index, block in enumerate(chunks):
            out[index] = self.encrypt_plaintext(self.encode(block, public), public)
            if progress is not None:
                progress(1)
        return out
