"""What a client does with its update: weight it, encrypt it, wrap it in an envelope."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from clients.encrypt_pool import EncryptionPool
from he_agg.backend import encrypt_vector
from he_agg.backend.proven import encrypt_with_proofs
from he_agg.envelope import Upload, encode_upload
from he_agg.errors import ProtocolError
from he_agg.packing import Manifest, flatten, weighted_vector
from he_agg.public import PublicContext
from he_agg.wellformed import ProofContext

__all__ = ["prepare_upload"]


def prepare_upload(
    update: Mapping[str, Any],
    num_samples: float,
    public: PublicContext,
    *,
    federation: str,
    round: int,
    client: str,
    epoch: int = 0,
    roster_digest: bytes | None = None,
    progress: Callable[[int], None] | None = None,
    pool: EncryptionPool | None = None,
) -> tuple[bytes, Manifest]:
    """Envelope bytes for Enc([n_k, n_k·x_k]) under the collective key, and the manifest.

    With a parameter set that requires proofs, every c1 is proven well formed, bound to
    this federation, epoch, round, client and the roster (``roster_digest``, required).
    With ``pool`` (an :class:`EncryptionPool` under the same key), every core encrypts."""
    vector, manifest = flatten(update)
    params = public.params
    weighted = weighted_vector(vector, num_samples, params)
    proofs: tuple[bytes, ...] = ()
    context = None
    if params.proofs:
        if roster_digest is None:
            raise ProtocolError("a proof of well-formed ciphertexts binds the roster digest")
        context = ProofContext(params.fingerprint, federation, epoch, round, client, roster_digest)
    if pool is not None and pool.serves(public):
        words, proofs = pool.encrypt(weighted, context, progress)
    elif context is not None:
        words, proofs = encrypt_with_proofs(weighted, public, context, progress)
    else:
        words = encrypt_vector(weighted, public, progress=progress)
    upload = Upload(federation, round, client, params.scale, words, epoch, proofs)
    return encode_upload(upload, params), manifest
