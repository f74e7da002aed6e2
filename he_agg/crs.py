"""The common reference polynomial a, expanded from SHAKE-256(federation id ‖ "crs").

Words are read as little-endian u64, masked to each prime's width and kept when below
the prime, so a is uniform mod every key-level prime; it is taken to be in NTT form.
"""

from __future__ import annotations

import hashlib

import numpy as np

from he_agg.modarith import U64Array
from he_agg.params import ParameterSet

__all__ = ["common_reference_polynomial"]


def _expand(seed: bytes, q: int, n: int) -> U64Array:
    mask = np.uint64((1 << q.bit_length()) - 1)
    length = 8 * (2 * n + 64)
    while True:
        words = np.frombuffer(hashlib.shake_256(seed).digest(length), dtype="<u8").astype(np.uint64)
        kept = (words & mask)[(words & mask) < np.uint64(q)]
        if kept.size >= n:
            return kept[:n]
        length *= 2  # the same stream, read further: the prefix is unchanged


def common_reference_polynomial(params: ParameterSet, federation_id: str) -> U64Array:
    """a at the key level (data primes then the special prime), shape (L+1, N)."""
    primes = (*params.data_primes, params.special_prime)
    base = federation_id.encode() + b"\x00crs\x00" + params.fingerprint
    rows = [
        _expand(base + index.to_bytes(2, "little"), q, params.poly_degree)
        for index, q in enumerate(primes)
    ]
    return np.stack(rows)
