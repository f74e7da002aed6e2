"""Signed requests: what a caller signs with Ed25519 and what the server checks.

The signed text is, one field a line:

    he-agg-request-v2
    METHOD
    path?query
    sha256(body) in hex
    length of the body in bytes (decimal)
    timestamp (integer seconds since the epoch)
    nonce (hex)
    sha256(X-He-Agg-Manifest header, or empty) in hex

Headers carry the caller's public key, the timestamp, the nonce, the body's sha256 and
length, and the signature, so the server authenticates a request *before it reads a byte
of its body*; it then checks the body against the signed digest and length as it streams
in. Members re-check the stored signature of every upload before they decrypt, so the same
function serves the server, the clients and the committee. Version 1 (no length line)
is accepted only where a stored upload is re-checked (rows written before version 2): its
signature binds the body's sha256, which binds the length too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from he_agg.errors import SignatureError

__all__ = [
    "HEADER_DIGEST",
    "HEADER_KEY",
    "HEADER_LENGTH",
    "HEADER_MANIFEST",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "MAX_SKEW_SECONDS",
    "SignedRequest",
    "canonical_request",
    "verify_signature",
]

HEADER_KEY = "x-he-agg-key"
HEADER_TIMESTAMP = "x-he-agg-timestamp"
HEADER_NONCE = "x-he-agg-nonce"
HEADER_SIGNATURE = "x-he-agg-signature"
HEADER_MANIFEST = "x-he-agg-manifest"
HEADER_DIGEST = "x-he-agg-content-sha256"
HEADER_LENGTH = "x-he-agg-content-length"
MAX_SKEW_SECONDS = 300


@dataclass(frozen=True)
class SignedRequest:
    """Everything that was signed, as stored with an upload for members to re-check."""

    method: str
    target: str  # path plus query string
    body_sha256: str
    timestamp: int
    nonce: str
    manifest: str = ""
    length: int | None = None  # None: a version 1 signature (stored uploads only)

    def canonical(self) -> bytes:
        return canonical_request(
            self.method,
            self.target,
            self.body_sha256,
            self.timestamp,
            self.nonce,
            self.manifest,
            self.length,
        )


def canonical_request(
    method: str,
    target: str,
    body_sha256: str,
    timestamp: int,
    nonce: str,
    manifest: str = "",
    length: int | None = None,
) -> bytes:
    """The signed text; ``length`` None gives version 1 (kept to re-check old uploads)."""
    manifest_digest = hashlib.sha256(manifest.encode()).hexdigest()
    version = ["he-agg-request-v1"] if length is None else ["he-agg-request-v2"]
    fields = [*version, method.upper(), target, body_sha256]
    fields += [] if length is None else [str(length)]
    fields += [str(timestamp), nonce, manifest_digest]
    return "\n".join(fields).encode()


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("signature does not verify") from exc
