"""Encryption backends behind one seam; ``encrypt_vector`` picks one and encrypts.

To add a backend (a GPU one, say): implement :class:`EncryptionBackend` in a module here
and name it in :func:`get_backend`. Its output must be ciphertext words in SEAL's layout
that SEAL decrypts, so nothing above this package changes.

Backends: ``native`` (SEAL's encryption formula in he-agg's compiled code, CPU: no SEAL
save and parse per ciphertext; the default without CUDA), ``seal`` (SEAL's own Encryptor
through TenSEAL, the reference it is checked against) and ``torch`` (he_agg.rlwe's
encryption in torch, on a GPU when CUDA is present; only for parameter sets with proofs).
``auto`` is torch when torch imports and sees CUDA, else native; the environment variable
``HE_AGG_BACKEND`` (auto|native|seal|torch) names the backend when no name is passed. torch is
imported only when it is asked about, so the server never imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from he_agg.backend.base import EncryptionBackend, Progress
from he_agg.errors import ParameterError
from he_agg.modarith import F64Array, U64Array
from he_agg.params import ParameterSet
from he_agg.public import PublicContext
from he_agg.rlwe import EncryptionWitness, KeyRows, encrypt_words

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "EncryptionBackend",
    "WordsEncryptor",
    "encrypt_vector",
    "get_backend",
    "releases_gil",
    "words_encryptor",
]

BACKENDS = ("native", "seal", "torch")
BACKEND_ENV = "HE_AGG_BACKEND"
WordsEncryptor = Callable[[U64Array, KeyRows, EncryptionWitness, ParameterSet], U64Array]
_instances: dict[str, EncryptionBackend] = {}


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _requested(name: str | None) -> str:
    return os.environ.get(BACKEND_ENV, "auto") if name is None else name


def _resolve(name: str | None) -> str:
    """The backend a request names: ``None`` reads HE_AGG_BACKEND, ``auto`` looks for CUDA."""
    requested = _requested(name)
    if requested == "auto":
        return "torch" if _cuda_available() else "native"
    if requested not in BACKENDS:
        raise ParameterError(
            "backend", f"unknown encryption backend {requested!r}; known: auto, {BACKENDS}"
        )
    return requested


def get_backend(name: str | None = None) -> EncryptionBackend:
    """The backend called ``name`` (one instance each); ``None`` takes HE_AGG_BACKEND
    (default ``auto``), and ``auto`` picks torch on a machine with CUDA, else native."""
    chosen = _resolve(name)
    if chosen not in _instances:
        if chosen == "torch":
            from he_agg.backend.torch_backend import TorchBackend

            _instances[chosen] = TorchBackend()
        elif chosen == "native":
            from he_agg.backend.native import NativeBackend

            _instances[chosen] = NativeBackend()
        else:
            from he_agg.backend.seal import SealBackend

            _instances[chosen] = SealBackend()
    return _instances[chosen]


def releases_gil(name: str | None = None, *, proofs: bool = False) -> bool:
    """Whether the backend ``name`` resolves to (as in :func:`get_backend`) encrypts without
    holding the GIL, so that threads share its work out over the cores: native (numba
    kernels, numpy's FFT, the OS CSPRNG) does; SEAL's Encryptor holds it, and torch's work
    is on one device. With ``proofs`` SEAL's Encryptor is not used at all (the words come
    from :func:`words_encryptor`, he_agg.rlwe's compiled kernels), so seal does too."""
    resolved = _resolve(name)
    return resolved == "native" or (proofs and resolved == "seal")


def words_encryptor(name: str | None = None) -> WordsEncryptor:
    """he_agg.rlwe.encrypt_words, or the torch backend's word-for-word equal one when the
    backend ``name`` resolves to (as in :func:`get_backend`) is torch."""
    if _resolve(name) == "torch":
        from he_agg.backend.torch_backend import TorchBackend

        backend = get_backend("torch")
        assert isinstance(backend, TorchBackend)
        return backend.encrypt_words
    return encrypt_words


def encrypt_vector(
    values: F64Array,
    public: PublicContext,
    *,
    backend: EncryptionBackend | None = None,
    progress: Progress | None = None,
) -> U64Array:
    """Encrypt a flat real vector under ``public``; words (C, 2, L, N) in NTT form.

    Without a ``backend``, the default one; when that is torch by ``auto`` and the
    parameter set's noise rules do not allow for its encryption, native instead."""
    if backend is None:
        backend = get_backend()
        if backend.name == "torch" and _requested(None) == "auto":
            from he_agg.backend.torch_backend import covers

            if not covers(public.params):
                backend = get_backend("native")
    return backend.encrypt(values, public, progress)
