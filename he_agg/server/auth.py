"""Request authentication: Ed25519 signatures, freshness, replay protection.

Everything is checked from the headers, before a byte of the body is read: the signature
covers the body's sha256 and length (``he_agg.request_signing``), so an unauthenticated
caller costs the server no memory and no disk. The body is then held to the signed digest
and length as it streams in (:class:`BodyCheck`)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request

from he_agg.errors import SignatureError
from he_agg.request_signing import (
    HEADER_DIGEST,
    HEADER_KEY,
    HEADER_LENGTH,
    HEADER_MANIFEST,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    canonical_request,
    verify_signature,
)
from he_agg.server.store import Store

__all__ = ["BodyCheck", "Caller", "PendingAuth", "complete", "read_headers", "request_target"]

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class PendingAuth:
    """Headers checked for shape and freshness; the signature still has to verify."""

    key: str
    timestamp: int
    nonce: str
    signature: bytes
    manifest: str
    body_sha256: str  # as signed: the body must match it
    length: int  # as signed: the body must be exactly this long


@dataclass(frozen=True)
class Caller:
    key: str
    is_admin: bool
    signed: PendingAuth

    @property
    def body_sha256(self) -> str:
        return self.signed.body_sha256


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, reason)


def request_target(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def read_headers(request: Request, max_skew: int) -> PendingAuth:
    headers = request.headers
    try:
        key = headers[HEADER_KEY]
        timestamp = int(headers[HEADER_TIMESTAMP])
        nonce = headers[HEADER_NONCE]
        signature = bytes.fromhex(headers[HEADER_SIGNATURE])
        raw_key = bytes.fromhex(key)
        digest = headers[HEADER_DIGEST].lower()
        length_text = headers[HEADER_LENGTH]
    except KeyError as exc:
        raise _unauthorized(
            "this route needs a signed request (he-agg request signing version 2)"
        ) from exc
    except ValueError as exc:
        raise _unauthorized("malformed authentication headers") from exc
    if len(raw_key) != 32 or len(signature) != 64 or not 8 <= len(nonce) <= 64:
        raise _unauthorized("malformed authentication headers")
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise _unauthorized(f"malformed {HEADER_DIGEST} header: 64 hex digits expected")
    if not length_text.isdigit() or len(length_text) > 15:
        raise _unauthorized(f"malformed {HEADER_LENGTH} header: a byte count expected")
    length = int(length_text)
    declared = headers.get("content-length")
    if declared is not None and declared != length_text:
        raise HTTPException(400, f"Content-Length {declared} differs from the signed {length}")
    if abs(time.time() - timestamp) > max_skew:
        raise _unauthorized("stale request: timestamp is too far from the server's clock")
    manifest = headers.get(HEADER_MANIFEST, "")
    return PendingAuth(key.lower(), timestamp, nonce, signature, manifest, digest, length)


def complete(
    pending: PendingAuth, method: str, target: str, store: Store, admin_keys: frozenset[str]
) -> Caller:
    """Verify the signature over the headers (the body unread), then spend the nonce; a
    nonce seen before is a replay."""
    message = canonical_request(
        method,
        target,
        pending.body_sha256,
        pending.timestamp,
        pending.nonce,
        pending.manifest,
        pending.length,
    )
    try:
        verify_signature(bytes.fromhex(pending.key), pending.signature, message)
    except SignatureError as exc:
        raise _unauthorized("bad signature") from exc
    if not store.spend_nonce(pending.key, pending.nonce, time.time()):
        raise _unauthorized("replayed request")
    return Caller(pending.key, pending.key in admin_keys, pending)


class BodyCheck:
    """Holds a body, as it streams in, to the length and sha256 its caller signed: a byte
    past the length aborts at once (400), and ``finish`` refuses a short body or another
    digest (400); the caller then drops whatever it kept."""

    def __init__(self, signed: PendingAuth) -> None:
        self.signed = signed
        self.size = 0
        self._digest = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.count(chunk)
        self.hash(chunk)

    def count(self, chunk: bytes) -> None:
        """Hold the body to its signed length as it arrives (cheap: on the event loop)."""
        self.size += len(chunk)
        if self.size > self.signed.length:
            raise HTTPException(
                400, f"the body is longer than the signed {self.signed.length} bytes"
            )

    def hash(self, data: bytes) -> None:
        """Add counted bytes to the digest, in order (a large body's: in a worker thread)."""
        self._digest.update(data)

    def finish(self) -> None:
        if self.size != self.signed.length:
            raise HTTPException(
                400, f"the body has {self.size} bytes; {self.signed.length} were signed"
            )
        if self._digest.hexdigest() != self.signed.body_sha256:
            raise HTTPException(400, "the body does not match its signed sha256")
