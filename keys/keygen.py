"""Distributed key generation of the collective public key (Mouchet et al., PETS 2021).

Every member i samples a ternary s_i and a Gaussian e_i and publishes, at the key level,
    p_i = −a·s_i + e_i            (NTT form, a the common reference polynomial)
after first committing to H(p_i). The collective key is pk = (Σ p_i, a), an ordinary
SEAL public key for s = Σ s_i; no one ever holds s. The public steps (commit, verify a
reveal, aggregate, form pk) live in :mod:`he_agg.collective_key` and are re-exported here
so the whole protocol reads in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from he_agg import ntt
from he_agg.collective_key import (
    PublicKeyShare,
    aggregate_public_key_shares,
    commit,
    key_primes,
    public_key,
    verify_reveal,
)
from he_agg.modarith import U64Array, mul_mod_shoup, shoup, sub_mod
from he_agg.params import ParameterSet
from he_agg.sampling import gaussian, ternary, to_rns

__all__ = [
    "PublicKeyShare",
    "SecretShare",
    "aggregate_public_key_shares",
    "commit",
    "gen_public_key_share",
    "gen_secret_share",
    "key_primes",
    "public_key",
    "verify_reveal",
]


@dataclass(frozen=True)
class SecretShare:
    """Member i's additive share s_i of the secret key: ternary coefficients."""

    member: int
    coeffs: npt.NDArray[np.int8]

    def ntt_form(self, primes: tuple[int, ...]) -> U64Array:
        """s_i mod each prime, in NTT form, shape (len(primes), N)."""
        rns = to_rns(self.coeffs, primes)
        return np.stack([ntt.forward(rns[j], q) for j, q in enumerate(primes)])


def gen_secret_share(params: ParameterSet, member: int) -> SecretShare:
    return SecretShare(member, ternary(params.poly_degree))


def gen_public_key_share(
    secret: SecretShare, crs: U64Array, params: ParameterSet
) -> PublicKeyShare:
    """GenShare: p_i = −a·s_i + e_i, with e_i a clipped Gaussian (σ = 3.19)."""
    primes = key_primes(params)
    s_ntt = secret.ntt_form(primes)
    e_rns = to_rns(gaussian(params.poly_degree), primes)
    rows = []
    for j, q in enumerate(primes):
        a_times_s = mul_mod_shoup(s_ntt[j], shoup(crs[j], q), q)
        rows.append(sub_mod(ntt.forward(e_rns[j], q), a_times_s, q))
    return PublicKeyShare(secret.member, np.stack(rows))
