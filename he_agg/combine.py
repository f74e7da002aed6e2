"""Combining decryption shares and decoding the round's average: public arithmetic.

Anyone holding the aggregate (c0, c1) and one share d_k from each member of a decryption
set S can finish the decryption:
    m′ = c0 + Σ_{k∈S} d_k = Δ·m + noise,
which SEAL's CKKSEncoder decodes; m = [Σ n_k, Σ n_k·x_k], so FedAvg is the second part
divided by the first. No secret is involved, which is why this lives in the core and the
server, the simulation and the benchmarks all call :func:`average_from_shares`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from he_agg.bitpack import pack_residues, unpack_residues
from he_agg.encoding import decode_aggregate
from he_agg.errors import MismatchError, ProtocolError
from he_agg.modarith import F64Array, U64Array, sum_rns
from he_agg.packing import weighted_average
from he_agg.params import ParameterSet
from he_agg.seal_context import seal_context
from he_agg.wire import Reader

__all__ = [
    "DecryptionShare",
    "average_from_shares",
    "combine",
    "lagrange_coefficient",
]

_MAGIC = b"HEDS"  # format 1: no epoch field (read as epoch 0)
_MAGIC_EPOCH = b"HED2"  # format 2: the key epoch after the aggregate digest


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
    """d_k for every ciphertext of one aggregate, NTT form (C, L, N), naming the key epoch
    whose share of s made it (the aggregate digest binds the epoch too: the aggregate
    envelope names it)."""

    member: int
    decryption_set: tuple[int, ...]
    aggregate_digest: bytes
    words: U64Array
    epoch: int = 0

    def to_bytes(self, params: ParameterSet) -> bytes:
        head = _MAGIC_EPOCH + params.fingerprint + self.aggregate_digest
        head += struct.pack("<I", self.epoch)
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
        magic = reader.take(4)
        if magic not in (_MAGIC, _MAGIC_EPOCH) or reader.take(32) != params.fingerprint:
            raise MismatchError("not a decryption share for this parameter set")
        digest = reader.take(32)
        (epoch,) = reader.unpack("<I") if magic == _MAGIC_EPOCH else (0,)
        member, count, size = reader.unpack("<IIB")
        members = reader.unpack(f"<{size}I")
        words = unpack_residues(reader.rest(), params.data_primes, (count,), params.poly_degree)
        return cls(member, tuple(members), digest, words, epoch)


def combine(c0: U64Array, shares: Sequence[DecryptionShare], params: ParameterSet) -> U64Array:
    """m′ = c0 + Σ d_k over exactly the members of one decryption set."""
    if not shares:
        raise ProtocolError("no decryption shares")
    members = shares[0].decryption_set
    for share in shares:
        first = shares[0]
        if (share.decryption_set, share.aggregate_digest, share.epoch) != (
            members,
            first.aggregate_digest,
            first.epoch,
        ):
            raise ProtocolError("decryption shares are for different sets, aggregates or epochs")
        if share.words.shape != c0.shape:
            raise MismatchError("decryption share does not match the aggregate's shape")
    if sorted(share.member for share in shares) != sorted(members):
        raise ProtocolError(f"need one share from each of {members}")
    return sum_rns([c0, *(share.words for share in shares)], params.data_primes)


def average_from_shares(
    c0: U64Array, shares: Sequence[DecryptionShare], params: ParameterSet, size: int
) -> F64Array:
    """combine → decode → divide by Σ n_k: the round's FedAvg vector of ``size`` values."""
    decoded = decode_aggregate(combine(c0, shares, params), seal_context(params))
    return weighted_average(decoded, size)
