"""Request authentication: Ed25519 signatures, freshness, replay protection, roles."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request

from he_agg.errors import SignatureError
from he_agg.request_signing import (
    HEADER_KEY,
    HEADER_MANIFEST,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    canonical_request,
    verify_signature,
)
from he_agg.server.store import Store

__all__ = ["Caller", "PendingAuth", "complete", "read_headers", "request_target"]


@dataclass(frozen=True)
class PendingAuth:
    """Headers checked for shape and freshness; the signature still has to verify."""

    key: str
    timestamp: int
    nonce: str
    signature: bytes
    manifest: str


@dataclass(frozen=True)
class Caller:
    key: str
    is_admin: bool
    signed: PendingAuth
    body_sha256: str


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
    except KeyError as exc:
        raise _unauthorized("this route needs a signed request") from exc
    except ValueError as exc:
        raise _unauthorized("malformed authentication headers") from exc
    if len(raw_key) != 32 or len(signature) != 64 or not 8 <= len(nonce) <= 64:
        raise _unauthorized("malformed authentication headers")
    if abs(time.time() - timestamp) > max_skew:
        raise _unauthorized("stale request: timestamp is too far from the server's clock")
    return PendingAuth(key.lower(), timestamp, nonce, signature, headers.get(HEADER_MANIFEST, ""))


def complete(
    pending: PendingAuth,
    method: str,
    target: str,
    body_sha256: str,
    store: Store,
    admin_keys: frozenset[str],
) -> Caller:
    """Verify the signature, then spend the nonce; a nonce seen before is a replay."""
    message = canonical_request(
        method, target, body_sha256, pending.timestamp, pending.nonce, pending.manifest
    )
    try:
        verify_signature(bytes.fromhex(pending.key), pending.signature, message)
    except SignatureError as exc:
        raise _unauthorized("bad signature") from exc
    if not store.spend_nonce(pending.key, pending.nonce, time.time()):
        raise _unauthorized("replayed request")
    return Caller(pending.key, pending.key in admin_keys, pending, body_sha256)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
