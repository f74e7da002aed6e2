"""Encryption backends behind one seam; ``encrypt_vector`` picks one and encrypts.

To add a backend (a GPU one, say): implement :class:`EncryptionBackend` in a module here
and name it in :func:`get_backend`. Its output must be word-for-word what SEAL would
produce for the same randomness, so nothing above this package changes.
"""

from __future__ import annotations

from he_agg.backend.base import EncryptionBackend, Progress
from he_agg.errors import ParameterError
from he_agg.modarith import F64Array, U64Array
from he_agg.public import PublicContext

__all__ = ["BACKENDS", "EncryptionBackend", "encrypt_vector", "get_backend"]

BACKENDS = ("seal",)
_instances: dict[str, EncryptionBackend] = {}


def get_backend(name: str = "auto") -> EncryptionBackend:
    """The backend called ``name``; ``auto`` picks the best one available (SEAL today)."""
    chosen = "seal" if name == "auto" else name
    if chosen not in BACKENDS:
        raise ParameterError(
            "backend", f"unknown encryption backend {name!r}; known: auto, {BACKENDS}"
        )
    if chosen not in _instances:
        from he_agg.backend.seal import SealBackend

        _instances[chosen] = SealBackend()
    return _instances[chosen]


def encrypt_vector(
    values: F64Array,
    public: PublicContext,
    *,
    backend: EncryptionBackend | None = None,
    progress: Progress | None = None,
) -> U64Array:
    """Encrypt a flat real vector under ``public``; words (C, 2, L, N) in NTT form."""
    return (backend or get_backend()).encrypt(values, public, progress)
