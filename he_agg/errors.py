"""The one exception hierarchy of he-agg.

    HeAggError
    ├── ParameterError          a parameter set breaks a rule (see params.py)
    ├── CodecError              bytes that cannot be read
    │   ├── SealFormatError     SEAL's own serialization is malformed or of another version
    │   └── EnvelopeError       our upload envelope fails validation
    │       ├── MagicError
    │       ├── VersionError
    │       ├── FingerprintError
    │       ├── MismatchError    federation, round, client, count or scale is not as expected
    │       ├── SizeError        truncated, too long, or counts that do not add up
    │       └── WordRangeError   an RNS word is not below its prime
    ├── PackingError            an update does not fit the manifest or the parameter set's bounds
    ├── ProtocolError           a committee message fails verification
    │   ├── CommitmentError     a revealed share does not match its commitment
    │   ├── SignatureError      an Ed25519 signature does not verify
    │   └── DecryptionRefused   a member will not produce a decryption share
    ├── KeyStoreError           a key file cannot be opened (wrong passphrase, tampered, mode)
    ├── OutOfRange              a number in a request is too large for where it is stored
    ├── StoreError              the server's database cannot do what was asked
    │   ├── StoreConflict       a row with that key exists already
    │   └── SchemaError         the database schema is newer than this he-agg, or unknown
    ├── ServiceError            an HTTP error status, with ``status`` and ``detail``
    └── TransportError          the server cannot be reached or spoken to (connection, TLS:
                                ``tls`` is set when the handshake or certificate failed)

Errors from libraries below (cryptography, SEAL, httpx) are converted where they enter with
``raise Mapped(...) from exc``.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "CommitmentError",
    "DecryptionRefused",
    "EnvelopeError",
    "FingerprintError",
    "HeAggError",
    "KeyStoreError",
    "MagicError",
    "MismatchError",
    "OutOfRange",
    "PackingError",
    "ParameterError",
    "ProtocolError",
    "SchemaError",
    "SealFormatError",
    "ServiceError",
    "SignatureError",
    "SizeError",
    "StoreConflict",
    "StoreError",
    "TransportError",
    "VersionError",
    "WordRangeError",
]


class HeAggError(Exception):
    """Base of every error he-agg raises on purpose."""


class ParameterError(HeAggError):
    """A parameter set breaks one of the derivation rules; ``rule`` names which."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


class CodecError(HeAggError):
    pass


class SealFormatError(CodecError):
    pass


class EnvelopeError(CodecError):
    pass


class MagicError(EnvelopeError):
    pass


class VersionError(EnvelopeError):
    pass


class FingerprintError(EnvelopeError):
    pass


class MismatchError(EnvelopeError):
    pass


class SizeError(EnvelopeError):
    pass


class WordRangeError(EnvelopeError):
    pass


class PackingError(HeAggError):
    pass


class ProtocolError(HeAggError):
    pass


class CommitmentError(ProtocolError):
    pass


class SignatureError(ProtocolError):
    pass


class DecryptionRefused(ProtocolError):
    pass


class KeyStoreError(HeAggError):
    pass


class OutOfRange(HeAggError):
    """A number in a request is too large for where it would be stored (a 422)."""


class StoreError(HeAggError):
    """The server's database refused or failed an operation."""


class StoreConflict(StoreError):
    """An insert hit a row that already exists (a duplicate key)."""


class SchemaError(StoreError):
    """The database's schema revision is not one this version of he-agg knows."""


class ServiceError(HeAggError):
    """An HTTP error from the aggregator, with its status code and the server's explanation."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after  # seconds, for a 503 or 429 (the Retry-After header)


class TransportError(HeAggError):
    """No HTTP answer: the connection failed, or TLS did (``tls``: the handshake or the
    server's certificate, which the client's CA file or the system store does not vouch for)."""

    def __init__(self, message: str, *, tls: bool = False) -> None:
        super().__init__(message)
        self.tls = tls
