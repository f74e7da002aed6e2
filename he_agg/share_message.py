"""The encrypted Shamir share message that the aggregator relays between members.

share_{sender→recipient} is sealed to the recipient (X25519 + HKDF + ChaCha20-Poly1305,
in ``keys.shamir``) and signed by the sender (Ed25519). The server checks the address
and the signature and never sees the share itself.

    | "HESS" | federation (u32 len + utf-8) | epoch u64 | sender u32 | recipient u32 |
    | ephemeral X25519 key (32) | nonce (12) | ciphertext (u32 len + bytes) | signature (64) |
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from he_agg.errors import MismatchError
from he_agg.wire import Reader, blob

__all__ = ["EncryptedShare"]

_MAGIC = b"HESS"


@dataclass(frozen=True)
class EncryptedShare:
    """share_{sender→recipient}, sealed to the recipient and signed by the sender."""

    federation: str
    epoch: int
    sender: int
    recipient: int
    ephemeral_key: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes

    def header(self) -> bytes:
        return (
            _MAGIC
            + blob(self.federation.encode())
            + struct.pack("<QII", self.epoch, self.sender, self.recipient)
            + self.ephemeral_key
            + self.nonce
        )

    def signed_part(self) -> bytes:
        return self.header() + blob(self.ciphertext)

    def to_bytes(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedShare:
        reader = Reader(data)
        if reader.take(4) != _MAGIC:
            raise MismatchError("not an encrypted Shamir share")
        federation = reader.blob().decode()
        epoch, sender, recipient = reader.unpack("<QII")
        ephemeral, nonce, ciphertext = reader.take(32), reader.take(12), reader.blob()
        signature = reader.take(64)
        reader.finish()
        return cls(federation, epoch, sender, recipient, ephemeral, nonce, ciphertext, signature)
