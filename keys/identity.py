"""A party's long-term keys: Ed25519 to sign, X25519 to receive encrypted shares."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from he_agg.errors import KeyStoreError
from he_agg.request_signing import verify_signature

__all__ = [
    "Identity",
    "PublicIdentity",
    "load_identity",
    "save_identity",
    "verify_signature",
    "x25519_public",
]

_RAW = (Encoding.Raw, PublicFormat.Raw)
_IDENTITY_MAGIC = b"HEID"


@dataclass(frozen=True)
class PublicIdentity:
    """What everyone may know about a party: its index and raw public keys."""

    index: int
    signing_key: bytes  # Ed25519, 32 bytes
    encryption_key: bytes  # X25519, 32 bytes

    def verify(self, signature: bytes, message: bytes) -> None:
        verify_signature(self.signing_key, signature, message)


@dataclass(frozen=True)
class Identity:
    index: int
    signing: Ed25519PrivateKey
    encryption: X25519PrivateKey

    @classmethod
    def generate(cls, index: int) -> Identity:
        return cls(index, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def public(self) -> PublicIdentity:
        return PublicIdentity(
            self.index,
            self.signing.public_key().public_bytes(*_RAW),
            self.encryption.public_key().public_bytes(*_RAW),
        )

    def sign(self, message: bytes) -> bytes:
        return self.signing.sign(message)

    def private_bytes(self) -> bytes:
        """64 bytes: the raw Ed25519 seed then the raw X25519 scalar (keep it encrypted)."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        fmt = (Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return self.signing.private_bytes(*fmt) + self.encryption.private_bytes(*fmt)

    @classmethod
    def from_private_bytes(cls, index: int, raw: bytes) -> Identity:
        if len(raw) != 64:
            raise ValueError("identity keys are 64 bytes")
        return cls(
            index,
            Ed25519PrivateKey.from_private_bytes(raw[:32]),
            X25519PrivateKey.from_private_bytes(raw[32:]),
        )


def save_identity(path: Path, identity: Identity, passphrase: str) -> None:
    """A party's private keys at rest: encrypted under the passphrase, mode 0600."""
    from keys.keystore import save_secret

    save_secret(
        path,
        _IDENTITY_MAGIC + struct.pack("<H", identity.index) + identity.private_bytes(),
        passphrase,
    )


def load_identity(path: Path, passphrase: str) -> Identity:
    from keys.keystore import load_secret

    raw = load_secret(path, passphrase)
    if not raw.startswith(_IDENTITY_MAGIC) or len(raw) != 4 + 2 + 64:
        raise KeyStoreError(f"{path} does not hold a party's keys")
    (index,) = struct.unpack_from("<H", raw, 4)
    return Identity.from_private_bytes(index, raw[6:])


def x25519_public(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(raw)
