"""CKKS encoding and decoding through SEAL's CKKSEncoder, with complex packing.

A block of N reals r becomes N/2 complex slots z_j = r_j + i·r_{N/2+j}, so one
ciphertext carries N reals rather than N/2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from he_agg.modarith import F64Array, U64Array
from he_agg.seal_codec import SealPlaintext, plaintext_to_bytes
from he_agg.seal_context import SealContext

__all__ = ["blocks", "decode_aggregate", "decode_words", "encode_block"]


def blocks(values: F64Array, slots: int) -> F64Array:
    """Zero-pad a flat vector to whole blocks of ``slots`` reals, shape (C, slots)."""
    count = max(1, -(-values.size // slots))
    padded = np.zeros(count * slots, dtype=np.float64)
    padded[: values.size] = values
    return padded.reshape(count, slots)


def encode_block(block: F64Array, ctx: SealContext, encoder: Any) -> Any:
    """One block of N reals → a SEAL Plaintext at the data level, scale Δ."""
    half = block.size // 2
    slots = (block[:half] + 1j * block[half:]).tolist()
    plain = sealapi.Plaintext()
    encoder.encode(slots, ctx.params.scale, plain)
    return plain


def decode_words(words: U64Array, ctx: SealContext, encoder: Any) -> F64Array:
    """Decode a plaintext given as NTT-form words (L, N) at scale Δ back to N reals."""
    plain = SealPlaintext(parms_id=ctx.data_parms_id, data=words, scale=ctx.params.scale)
    loaded = ctx.load(sealapi.Plaintext, plaintext_to_bytes(plain))
    slots = np.asarray(encoder.decode_complex(loaded), dtype=np.complex128)
    return np.concatenate([slots.real, slots.imag])


def decode_aggregate(words: U64Array, ctx: SealContext) -> F64Array:
    """Decode combined plaintexts (C, L, N) to one flat vector of C·N reals."""
    encoder = sealapi.CKKSEncoder(ctx.context)
    return np.concatenate([decode_words(block, ctx, encoder) for block in words])
