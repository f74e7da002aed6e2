"""What a client needs to encrypt: the parameter set and the collective public key.

Clients hold no secret. The encryption itself is done by a backend (:mod:`he_agg.backend`).
"""

from __future__ import annotations

from dataclasses import dataclass

from he_agg.errors import SealFormatError
from he_agg.params import ParameterSet
from he_agg.seal_codec import SealCiphertext
from he_agg.seal_context import SealContext, seal_context

__all__ = ["PublicContext"]


@dataclass(frozen=True)
class PublicContext:
    """The parameter set and the collective public key (a ciphertext at the key level)."""

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
