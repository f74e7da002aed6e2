"""An httpx client that signs every request and retries what is safe to retry.

Retries (connection errors and 503) re-sign with a fresh timestamp and nonce but send
the same body, so an idempotent PUT gives the same answer however often it arrives.
The transport is injectable: tests run it against the app in-process or over loopback.

Over https the server's certificate is verified against ``verify``: a CA file (PEM), an
``ssl.SSLContext``, or True for the system store. A certificate that does not verify, or
a refused handshake, is not retried: it raises :class:`he_agg.errors.TransportError` with
``tls`` set at once. Connection errors that outlast the retries raise it too.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from he_agg.errors import ServiceError, TransportError
from he_agg.request_signing import (
    HEADER_DIGEST,
    HEADER_KEY,
    HEADER_LENGTH,
    HEADER_MANIFEST,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    canonical_request,
)

__all__ = ["SignedClient", "Verify", "ssl_context"]

_CHUNK = 1 << 20

Verify = str | Path | bool | ssl.SSLContext
"""How a client checks the server's certificate: a CA file, a context, True (the system
store) or False (no check; never for a real federation)."""


def ssl_context(verify: Verify) -> ssl.SSLContext:
    """The client-side TLS context for ``verify``; a CA file that cannot be read raises
    :class:`TransportError` naming it."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=str(verify))
    except (OSError, ssl.SSLError) as exc:  # ssl.SSLError: no certificate in the file
        raise TransportError(f"cannot read the CA file {verify}: {exc}", tls=True) from exc


class SignedClient:
    def __init__(
        self,
        base_url: str,
        signing_key: Ed25519PrivateKey,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 120.0,
        retries: int = 12,
        backoff: float = 0.25,
        max_backoff: float = 1.0,
        verify: Verify = True,
        busy_deadline: float = 600.0,
    ) -> None:
        """Connection errors are retried ``retries`` times, ``backoff`` doubling up to
        ``max_backoff`` (jittered): a restarting server is tried at least once a second, so
        a member's decryption share reaches it within a second of its return, well inside
        any share timeout (the harness measured 12 s gaps with the old cap of 30 s; 1 of
        1,000 kills then spent τ), and the whole budget still covers about 5 to 11 s of
        outage."""
        self._http = httpx.Client(
            base_url=base_url, transport=transport, timeout=timeout, verify=ssl_context(verify)
        )
        self._key = signing_key
        self.public_key = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.busy_deadline = busy_deadline  # seconds a busy server (503/429) is waited for

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SignedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def headers(self, method: str, target: str, body: bytes, manifest: str = "") -> dict[str, str]:
        timestamp, nonce = int(time.time()), secrets.token_hex(16)
        digest = hashlib.sha256(body).hexdigest()
        message = canonical_request(method, target, digest, timestamp, nonce, manifest, len(body))
        headers = {
            HEADER_KEY: self.public_key.hex(),
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_NONCE: nonce,
            HEADER_DIGEST: digest,
            HEADER_LENGTH: str(len(body)),
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
        started = time.monotonic()
        while True:
            signed = {**headers, **self.headers(method, target, content, manifest)}
            try:
                body: bytes | Iterator[bytes] = content
                if progress is not None and content:
                    body = _chunks(content, progress)
                    signed["content-length"] = str(len(content))
                response = self._http.request(method, path, content=body, headers=signed)
            except httpx.TransportError as exc:
                if _tls_refusal(exc) is not None or attempt >= self.retries:
                    self._unreachable(exc)
            else:
                if response.status_code not in (429, 503):
                    break
                wait = _retry_after(response)
                if wait is None:  # a 503 without advice: the server is unwell, retry a little
                    if attempt >= self.retries:
                        break
                elif time.monotonic() - started + wait > self.busy_deadline:
                    break  # busy for longer than the caller is willing to wait
                else:  # busy: wait what it asks, jittered so the clients do not come back at once
                    time.sleep(wait * random.uniform(1.0, 1.5))
                    attempt += 1
                    continue
            time.sleep(min(self.backoff * 2**attempt, self.max_backoff) * random.uniform(0.5, 1.0))
            attempt += 1
        if response.status_code >= 400 and response.status_code not in allow:
            try:
                detail = str(response.json().get("detail", response.text))
            except ValueError:
                detail = response.text
            raise ServiceError(response.status_code, detail)
        return response

    def _unreachable(self, exc: httpx.TransportError) -> NoReturn:
        """Raise the :class:`TransportError` for an httpx error, saying what to do about TLS."""
        url = str(self._http.base_url).rstrip("/")
        cause = _ssl_failure(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or str(cause)
            raise TransportError(
                f"the server's TLS certificate at {url} is not trusted ({reason}): pass the CA "
                "file that signed it (--ca-file or HE_AGG_CA_FILE; verify= in the SDK)",
                tls=True,
            ) from exc
        if cause is not None:
            raise TransportError(f"TLS with {url} failed: {cause}", tls=True) from exc
        hint = ""
        if self._http.base_url.scheme == "http" and isinstance(exc, httpx.RemoteProtocolError):
            hint = " (if the server uses TLS, its URL starts with https://)"
        detail = str(exc) or repr(exc)
        raise TransportError(f"cannot reach the server at {url}: {detail}{hint}") from exc


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds of a Retry-After header (delta-seconds form), if there is one."""
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def _tls_refusal(exc: httpx.TransportError) -> ssl.SSLError | None:
    """The ssl error that retrying will not cure: a certificate that does not verify, or a
    handshake refused (not a connection cut short, as by a restarting server)."""
    cause = _ssl_failure(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return cause
    cut_short = isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError)
    if isinstance(exc, httpx.ConnectError) and cause is not None and not cut_short:
        return cause
    return None


def _ssl_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error under an httpx error (its cause chain), if TLS is what failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _chunks(content: bytes, progress: Callable[[int], None]) -> Iterator[bytes]:
    view = memoryview(content)
    for start in range(0, len(content), _CHUNK):
        chunk = view[start : start + _CHUNK]
        yield bytes(chunk)
        progress(len(chunk))
