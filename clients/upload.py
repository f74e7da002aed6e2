"""What a client does with its update: weight it, encrypt it, wrap it in an envelope."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from he_agg.backend import encrypt_vector
from he_agg.envelope import Upload, encode_upload
from he_agg.packing import Manifest, flatten, weighted_vector
from he_agg.public import PublicContext

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
    progress: Callable[[int], None] | None = None,
) -> tuple[bytes, Manifest]:
    """Envelope bytes for Enc([n_k, n_k·x_k]) under the collective key, and the manifest."""
    vector, manifest = flatten(update)
    weighted = weighted_vector(vector, num_samples, public.params)
    words = encrypt_vector(weighted, public, progress=progress)
    upload = Upload(federation, round, client, public.params.scale, words, epoch)
    return encode_upload(upload, public.params), manifest
