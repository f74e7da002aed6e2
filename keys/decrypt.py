"""Threshold decryption of the round aggregate: shares with flooding, then combine.

For the aggregate (c0, c1) and a decryption set S of t members, member k sends
    d_k = λ_k^S · (c1 ⊙ S_k) + NTT(e_k)
where λ_k^S = Π_{j∈S, j≠k} j / (j − k) mod q is its Lagrange coefficient and e_k is
flooding noise of width σ_flood ≥ the rule (each member's noise meets the rule on its
own). Combining the shares is public arithmetic and lives in :mod:`he_agg.combine`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from he_agg import ntt
from he_agg.combine import DecryptionShare, lagrange_coefficient
from he_agg.errors import DecryptionRefused
from he_agg.modarith import U64Array, add_mod, mul_mod_shoup, shoup
from he_agg.params import FLOOD_TAIL, ParameterSet
from he_agg.sampling import flooding_noise_rns
from keys.shamir import ThresholdShare

__all__ = ["decryption_share"]


def decryption_share(
    share: ThresholdShare,
    c1: U64Array,
    decryption_set: Sequence[int],
    params: ParameterSet,
    aggregate_digest: bytes,
    flood_bits: int | None = None,
    epoch: int = 0,
) -> DecryptionShare:
    """This member's partial decryption of c1 (C, L, N), flooded at σ = 2^flood_bits."""
    bits = params.flood_bits if flood_bits is None else flood_bits
    if 2.0**bits < params.required_flood_sigma():
        raise DecryptionRefused(
            f"flooding σ = 2^{bits} is below the rule for this parameter set; refusing to share"
        )
    members = tuple(decryption_set)
    if share.member not in members or len(set(members)) != len(members):
        raise DecryptionRefused("the decryption set must list distinct members, this one included")
    primes = params.data_primes
    noise = flooding_noise_rns((c1.shape[0], params.poly_degree), bits, FLOOD_TAIL, primes)
    out = np.empty_like(c1)
    for j, q in enumerate(primes):
        weight = shoup(lagrange_coefficient(share.member, members, q), q)
        weighted_secret = shoup(mul_mod_shoup(share.words[j], weight, q), q)
        masked = mul_mod_shoup(c1[:, j], weighted_secret, q)
        out[:, j] = add_mod(masked, ntt.forward(noise[:, j], q), q)
    return DecryptionShare(share.member, members, aggregate_digest, out, epoch)
