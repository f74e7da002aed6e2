"""The public side of the DKG: public-key shares, commitments and the collective key.

Member i publishes p_i = −a·s_i + e_i at the key level (NTT form), after committing to
H(p_i). Anyone can check a reveal against its commitment and form the collective key
    pk = (Σ p_i, a),
an ordinary SEAL public key for s = Σ s_i. The server and clients need exactly this and
no secret, so it lives in the core; the secret steps are in ``keys.keygen``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from he_agg.bitpack import pack_residues, unpack_residues
from he_agg.errors import CommitmentError, MismatchError
from he_agg.modarith import U64Array, sum_rns
from he_agg.params import ParameterSet
from he_agg.seal_codec import SealCiphertext
from he_agg.seal_context import seal_context
from he_agg.wire import Reader

__all__ = [
    "PublicKeyShare",
    "aggregate_public_key_shares",
    "commit",
    "commitment_message",
    "key_primes",
    "public_key",
    "verify_reveal",
]

_PK_SHARE_MAGIC = b"HEPK"


def key_primes(params: ParameterSet) -> tuple[int, ...]:
    return (*params.data_primes, params.special_prime)


@dataclass(frozen=True)
class PublicKeyShare:
    """p_i = −a·s_i + e_i at the key level, NTT form, shape (L+1, N)."""

    member: int
    words: U64Array

    def to_bytes(self, params: ParameterSet) -> bytes:
        head = _PK_SHARE_MAGIC + params.fingerprint + struct.pack("<I", self.member)
        return head + pack_residues(self.words, key_primes(params))

    @classmethod
    def from_bytes(cls, data: bytes, params: ParameterSet) -> PublicKeyShare:
        reader = Reader(data)
        if reader.take(4) != _PK_SHARE_MAGIC or reader.take(32) != params.fingerprint:
            raise MismatchError("not a public-key share for this parameter set")
        (member,) = reader.unpack("<I")
        words = unpack_residues(reader.rest(), key_primes(params), (), params.poly_degree)
        return cls(member, words)


def commit(share: PublicKeyShare, params: ParameterSet, federation: str, epoch: int) -> bytes:
    """H(p_i), bound to the federation, the key epoch and the member."""
    digest = hashlib.sha256(b"he-agg/pk-commitment/v1\x00")
    digest.update(federation.encode() + b"\x00" + struct.pack("<Q", epoch))
    digest.update(share.to_bytes(params))
    return digest.digest()


def commitment_message(
    federation: str, epoch: int, member: int, roster_digest: bytes, commitment: bytes
) -> bytes:
    """What a member signs with its roster key when it posts H(p_i): the commitment is then
    its own, so a server cannot post commitments (and later reveals) in a member's name."""
    return (
        b"he-agg/pk-commitment-signed/v1\x00"
        + federation.encode()
        + b"\x00"
        + struct.pack("<QI", epoch, member)
        + roster_digest
        + commitment
    )


def verify_reveal(
    commitment: bytes, share: PublicKeyShare, params: ParameterSet, federation: str, epoch: int
) -> None:
    """A revealed p_i must match the commitment posted before any share was seen."""
    if commit(share, params, federation, epoch) != commitment:
        raise CommitmentError(
            f"member {share.member}'s public-key share does not match its commitment"
        )


def aggregate_public_key_shares(shares: Sequence[PublicKeyShare], params: ParameterSet) -> U64Array:
    """AggregateShares: Σ p_i mod each key-level prime."""
    if not shares:
        raise MismatchError("no public-key shares to aggregate")
    return sum_rns([share.words for share in shares], key_primes(params))


def public_key(aggregate: U64Array, crs: U64Array, params: ParameterSet) -> SealCiphertext:
    """GenPublicKey: pk = (Σ p_i, a), laid out as SEAL's PublicKey at the key level."""
    ctx = seal_context(params)
    return SealCiphertext(
        parms_id=ctx.key_parms_id,
        is_ntt_form=True,
        data=np.stack([aggregate, crs]),
        scale=1.0,
    )
