"""A committee member's secrets and their encrypted file at rest."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from he_agg.errors import KeyStoreError, SizeError
from he_agg.params import ParameterSet
from he_agg.wire import Reader, blob
from keys.identity import Identity
from keys.keygen import SecretShare
from keys.keystore import load_secret, save_secret
from keys.shamir import ThresholdShare

__all__ = ["MemberSecrets"]

_MAGIC = b"HEMS"


@dataclass(frozen=True)
class MemberSecrets:
    identity: Identity
    secret: SecretShare
    threshold_share: ThresholdShare

    def to_bytes(self, params: ParameterSet) -> bytes:
        return b"".join(
            [
                _MAGIC,
                params.fingerprint,
                struct.pack("<I", self.identity.index),
                blob(self.identity.private_bytes()),
                blob(self.secret.coeffs.astype(np.int8).tobytes()),
                blob(self.threshold_share.to_bytes(params)),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes, params: ParameterSet) -> MemberSecrets:
        reader = Reader(data)
        if reader.take(4) != _MAGIC or reader.take(32) != params.fingerprint:
            raise KeyStoreError("key file belongs to another parameter set")
        (index,) = reader.unpack("<I")
        identity = Identity.from_private_bytes(index, reader.blob())
        coeffs = np.frombuffer(reader.blob(), dtype=np.int8).copy()
        if coeffs.size != params.poly_degree:
            raise SizeError("secret share has the wrong length")
        threshold = ThresholdShare.from_bytes(reader.blob(), params)
        reader.finish()
        return cls(identity, SecretShare(index, coeffs), threshold)

    def save(self, path: Path, passphrase: str, params: ParameterSet) -> None:
        save_secret(path, self.to_bytes(params), passphrase)

    @classmethod
    def load(cls, path: Path, passphrase: str, params: ParameterSet) -> MemberSecrets:
        return cls.from_bytes(load_secret(path, passphrase), params)
