"""t-of-n Shamir sharing of each member's s_i, per data prime, sent encrypted and signed.

Member i picks, for every coefficient and every data prime q_j, a random polynomial
f(x) = s_i + r_1·x + … + r_{t−1}·x^{t−1} over Z_{q_j} and gives member k the value f(k).
Member k's threshold share is S_k = Σ_i f_i(k); the Lagrange combination of any t of
them is s = Σ_i s_i, which no one ever computes.

Each share travels to its recipient under X25519 + HKDF-SHA256 + ChaCha20-Poly1305 and is
signed with the sender's Ed25519 key; the aggregator only relays the bytes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from he_agg.bitpack import pack_residues, unpack_residues
from he_agg.errors import ProtocolError
from he_agg.modarith import U64Array, add_mod, mul_mod_shoup, shoup, sum_rns
from he_agg.params import ParameterSet
from he_agg.sampling import uniform_mod
from he_agg.share_message import EncryptedShare
from he_agg.wire import Reader
from keys.identity import Identity, PublicIdentity, x25519_public
from keys.keygen import SecretShare

__all__ = [
    "EncryptedShare",
    "ThresholdShare",
    "assemble_threshold_share",
    "deal_shares",
    "open_share",
]


@dataclass(frozen=True)
class ThresholdShare:
    """S_k: member k's point on the sum of all dealt polynomials, NTT form (L, N)."""

    member: int
    words: U64Array

    def to_bytes(self, params: ParameterSet) -> bytes:
        return struct.pack("<I", self.member) + pack_residues(self.words, params.data_primes)

    @classmethod
    def from_bytes(cls, data: bytes, params: ParameterSet) -> ThresholdShare:
        reader = Reader(data)
        (member,) = reader.unpack("<I")
        words = unpack_residues(reader.rest(), params.data_primes, (), params.poly_degree)
        return cls(member, words)


def _share_key(shared_secret: bytes, message_header: bytes, recipient_key: bytes) -> bytes:
    info = b"he-agg/shamir-share/v1\x00" + message_header + recipient_key
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared_secret)


def _evaluate_shares(secret: U64Array, points: Sequence[int], threshold: int, q: int) -> U64Array:
    """f(x) = secret + Σ_d r_d x^d mod q at every point, with fresh uniform r_d."""
    coefficients = [uniform_mod(q, secret.shape) for _ in range(threshold - 1)]
    out = []
    for x in points:
        value = secret.copy()
        for degree, coefficient in enumerate(coefficients, start=1):
            value = add_mod(value, mul_mod_shoup(coefficient, shoup(pow(x, degree, q), q), q), q)
        out.append(value)
    return np.stack(out)


def deal_shares(
    secret: SecretShare,
    params: ParameterSet,
    threshold: int,
    recipients: Sequence[PublicIdentity],
    sender: Identity,
    federation: str,
    epoch: int,
) -> list[EncryptedShare]:
    """Share s_i t-of-n over every data prime and seal each point to its recipient."""
    indices = [r.index for r in recipients]
    if (
        not 1 <= threshold <= len(recipients)
        or len(set(indices)) != len(indices)
        or min(indices) < 1
    ):
        raise ProtocolError("need distinct member indices ≥ 1 and 1 ≤ t ≤ n")
    if secret.member != sender.index:
        raise ProtocolError("the secret share does not belong to the sender")
    s_ntt = secret.ntt_form(params.data_primes)
    per_prime = [
        _evaluate_shares(s_ntt[j], indices, threshold, q) for j, q in enumerate(params.data_primes)
    ]
    messages = []
    for position, recipient in enumerate(recipients):
        point = np.stack([rows[position] for rows in per_prime])
        ephemeral = X25519PrivateKey.generate()
        unsigned = EncryptedShare(
            federation,
            epoch,
            sender.index,
            recipient.index,
            ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            os.urandom(12),
            b"",
            b"",
        )
        shared = ephemeral.exchange(x25519_public(recipient.encryption_key))
        key = _share_key(shared, unsigned.header(), recipient.encryption_key)
        sealed = ChaCha20Poly1305(key).encrypt(
            unsigned.nonce, pack_residues(point, params.data_primes), unsigned.header()
        )
        sealed_share = replace(unsigned, ciphertext=sealed)
        messages.append(replace(sealed_share, signature=sender.sign(sealed_share.signed_part())))
    return messages


def open_share(
    message: EncryptedShare,
    recipient: Identity,
    sender: PublicIdentity,
    params: ParameterSet,
    federation: str,
    epoch: int,
) -> U64Array:
    """Verify the sender's signature, then decrypt the point meant for us."""
    if (message.federation, message.epoch) != (federation, epoch):
        raise ProtocolError("share belongs to another federation or key epoch")
    if message.recipient != recipient.index or message.sender != sender.index:
        raise ProtocolError("share is addressed to someone else")
    sender.verify(message.signature, message.signed_part())
    shared = recipient.encryption.exchange(x25519_public(message.ephemeral_key))
    own_key = recipient.public.encryption_key
    key = _share_key(shared, message.header(), own_key)
    try:
        plain = ChaCha20Poly1305(key).decrypt(message.nonce, message.ciphertext, message.header())
    except InvalidTag as exc:
        raise ProtocolError("share does not decrypt: tampered or not for us") from exc
    return unpack_residues(plain, params.data_primes, (), params.poly_degree)


def assemble_threshold_share(
    member: int, points: Sequence[U64Array], params: ParameterSet
) -> ThresholdShare:
    """S_k = Σ_i f_i(k) over the points received from every dealer (own one included)."""
    if not points:
        raise ProtocolError("no shares to assemble")
    return ThresholdShare(member, sum_rns(list(points), params.data_primes))
