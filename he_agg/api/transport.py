"""An httpx client that signs every request and retries what is safe to retry.

Retries (connection errors and 503) re-sign with a fresh timestamp and nonce but send
the same body, so an idempotent PUT gives the same answer however often it arrives.
The transport is injectable: tests run it against the app in-process or over loopback.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from he_agg.errors import ServiceError
from he_agg.request_signing import (
    HEADER_KEY,
    HEADER_MANIFEST,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    canonical_request,
)

__all__ = ["SignedClient"]

_CHUNK = 1 << 20


class SignedClient:
    def __init__(
        self,
        base_url: str,
        signing_key: Ed25519PrivateKey,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 120.0,
        retries: int = 6,
        backoff: float = 0.25,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, transport=transport, timeout=timeout)
        self._key = signing_key
        self.public_key = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.retries = retries
        self.backoff = backoff

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SignedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def headers(self, method: str, target: str, body: bytes, manifest: str = "") -> dict[str, str]:
        timestamp, nonce = int(time.time()), secrets.token_hex(16)
        digest = hashlib.sha256(body).hexdigest()
        message = canonical_request(method, target, digest, timestamp, nonce, manifest)
        headers = {
            HEADER_KEY: self.public_key.hex(),
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_NONCE: nonce,
            HEADER_SIGNATURE: self._key.sign(message).hex(),
        }
        if manifest:
            headers[HEADER_MANIFEST] = manifest
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes = b"",
        json_body: Any = None,
        manifest: str = "",
        progress: Callable[[int], None] | None = None,
        allow: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send a signed request; raise ServiceError on an error status not in ``allow``."""
        headers: dict[str, str] = {}
        if json_body is not None:
            import json

            content = json.dumps(json_body).encode()
            headers["content-type"] = "application/json"
        elif content:
            headers["content-type"] = "application/octet-stream"
        target = str(httpx.URL(path).raw_path.decode())
        attempt = 0
        while True:
            signed = {**headers, **self.headers(method, target, content, manifest)}
            try:
                body: bytes | Iterator[bytes] = content
                if progress is not None and content:
                    body = _chunks(content, progress)
                    signed["content-length"] = str(len(content))
                response = self._http.request(method, path, content=body, headers=signed)
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            else:
                if response.status_code != 503 or attempt >= self.retries:
                    break
            time.sleep(self.backoff * 2**attempt)
            attempt += 1
        if response.status_code >= 400 and response.status_code not in allow:
            try:
                detail = str(response.json().get("detail", response.text))
            except ValueError:
                detail = response.text
            raise ServiceError(response.status_code, detail)
        return response


def _chunks(content: bytes, progress: Callable[[int], None]) -> Iterator[bytes]:
    view = memoryview(content)
    for start in range(0, len(content), _CHUNK):
        chunk = view[start : start + _CHUNK]
        yield bytes(chunk)
        progress(len(chunk))
