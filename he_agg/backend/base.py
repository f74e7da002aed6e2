"""The encryption-backend seam: encode and encrypt a packed real vector under a public key.

A backend returns SEAL-compatible ciphertext words (C, 2, L, N) in NTT form at the data
level, so the envelope, the aggregator and the members never know which one ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from he_agg.modarith import F64Array, U64Array
from he_agg.public import PublicContext

__all__ = ["EncryptionBackend", "Progress"]

Progress = Callable[[int], None]


class EncryptionBackend(Protocol):
    """Public-key CKKS encryption of N reals per ciphertext (complex packing)."""

    name: str

    def encrypt(
        self, values: F64Array, public: PublicContext, progress: Progress | None = None
    ) -> U64Array:
        """Encrypt a flat real vector, zero-padded to whole blocks of N; words (C, 2, L, N).

        ``progress`` is called with the number of ciphertexts finished since its last call.
        """
        ...
