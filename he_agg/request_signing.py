"""Signed requests: what a caller signs with Ed25519 and what the server checks.

The signed text is, one field a line:

    he-agg-request-v1
    METHOD
    path?query
    sha256(body) in hex
    timestamp (integer seconds since the epoch)
    nonce (hex)
    sha256(X-He-Agg-Manifest header, or empty) in hex

Headers carry the caller's public key, the timestamp, the nonce and the signature.
Members re-check the stored signature of every upload before they decrypt, so the same
function serves the server, the clients and the committee.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from he_agg.errors import SignatureError

__all__ = [
    "HEADER_KEY",
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

    def canonical(self) -> bytes:
        return canonical_request(
            self.method, self.target, self.body_sha256, self.timestamp, self.nonce, self.manifest
        )


def canonical_request(
    method: str, target: str, body_sha256: str, timestamp: int, nonce: str, manifest: str = ""
) -> bytes:
    manifest_digest = hashlib.sha256(manifest.encode()).hexdigest()
    fields = [
        "he-agg-request-v1",
        method.upper(),
        target,
        body_sha256,
        str(timestamp),
        nonce,
        manifest_digest,
    ]
    return "\n".join(fields).encode()


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("signature does not verify") from exc
