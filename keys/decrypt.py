"""Threshold decryption of the round aggregate: shares with flooding, then combine.

For the aggregate (c0, c1) and a decryption set S of t members, member k sends
    d_k = λ_k^S · (c1 ⊙ S_k) + NTT(e_k)
where λ_k^S = Π_{j∈S, j≠k} j / (j − k) mod q is its Lagrange coefficient and e_k is
flooding noise of width σ_flood ≥ the rule (each member's noise meets the rule on its
own). Anyone can combine: m′ = c0 + Σ_k d_k = Δ·m + noise, which SEAL decodes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from he_agg import ntt
from he_agg.bitpack import pack_residues, unpack_residues
from he_agg.errors import DecryptionRefused, MismatchError, ProtocolError
from he_agg.modarith import U64Array, add_mod, mul_mod_shoup, shoup, sum_rns
from he_agg.params import FLOOD_TAIL, ParameterSet
from he_agg.sampling import flooding_noise, to_rns
from keys.shamir import ThresholdShare
from keys.wire import Reader

__all__ = ["DecryptionShare", "combine", "decryption_share", "lagrange_coefficient"]

_MAGIC = b"HEDS"


def lagrange_coefficient(member: int, decryption_set: Sequence[int], q: int) -> int:
    """λ_k^S at x = 0 over Z_q."""
    numerator, denominator = 1, 1
    for other in decryption_set:
        if other != member:
            numerator = numerator * other % q
            denominator = denominator * (other - member) % q
    return numerator * pow(denominator, -1, q) % q


@dataclass(frozen=True)
class DecryptionShare:
    """d_k for every ciphertext of one aggregate, NTT form (C, L, N)."""

    member: int
    decryption_set: tuple[int, ...]
    aggregate_digest: bytes
    words: U64Array

    def to_bytes(self, params: ParameterSet) -> bytes:
        head = _MAGIC + params.fingerprint + self.aggregate_digest
        head += struct.pack(
            f"<IIB{len(self.decryption_set)}I",
            self.member,
            self.words.shape[0],
            len(self.decryption_set),
            *self.decryption_set,
        )
        return head + pack_residues(self.words, params.data_primes)

    @classmethod
    def from_bytes(cls, data: bytes, params: ParameterSet) -> DecryptionShare:
        reader = Reader(data)
        if reader.take(4) != _MAGIC or reader.take(32) != params.fingerprint:
            raise MismatchError("not a decryption share for this parameter set")
        digest = reader.take(32)
        member, count, size = reader.unpack("<IIB")
        members = reader.unpack(f"<{size}I")
        words = unpack_residues(reader.rest(), params.data_primes, (count,), params.poly_degree)
        return cls(member, tuple(members), digest, words)


def decryption_share(
    share: ThresholdShare,
    c1: U64Array,
    decryption_set: Sequence[int],
    params: ParameterSet,
    aggregate_digest: bytes,
    flood_bits: int | None = None,
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
    noise = to_rns(flooding_noise((c1.shape[0], params.poly_degree), bits, FLOOD_TAIL), primes)
    out = np.empty_like(c1)
    for j, q in enumerate(primes):
        weight = shoup(lagrange_coefficient(share.member, members, q), q)
        weighted_secret = shoup(mul_mod_shoup(share.words[j], weight, q), q)
        masked = mul_mod_shoup(c1[:, j], weighted_secret, q)
        out[:, j] = add_mod(masked, ntt.forward(noise[:, j], q), q)
    return DecryptionShare(share.member, members, aggregate_digest, out)


def combine(c0: U64Array, shares: Sequence[DecryptionShare], params: ParameterSet) -> U64Array:
    """m′ = c0 + Σ d_k over exactly the members of one decryption set."""
    if not shares:
        raise ProtocolError("no decryption shares")
    members = shares[0].decryption_set
    for share in shares:
        if share.decryption_set != members or share.aggregate_digest != shares[0].aggregate_digest:
            raise ProtocolError("decryption shares are for different sets or aggregates")
        if share.words.shape != c0.shape:
            raise MismatchError("decryption share does not match the aggregate's shape")
    if sorted(share.member for share in shares) != sorted(members):
        raise ProtocolError(f"need one share from each of {members}")
    return sum_rns([c0, *(share.words for share in shares)], params.data_primes)
