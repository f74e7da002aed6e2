"""The signed client retries connection errors and 503 with the same body, fresh signatures."""

import hashlib

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from he_agg.api.transport import SignedClient
from he_agg.errors import ServiceError
from he_agg.request_signing import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SignedRequest,
    verify_signature,
)


def test_retries_503_and_connection_errors_with_the_same_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(seen) == 2:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(201, json={"ok": True})

    key = Ed25519PrivateKey.generate()
    client = SignedClient("http://test", key, transport=httpx.MockTransport(handler), backoff=0)
    body = b"\x01" * 5000
    response = client.request("PUT", "/v1/x/rounds/1/updates/a", content=body)
    assert response.status_code == 201 and len(seen) == 3
    assert {r.read() for r in seen} == {body}
    assert len({r.headers[HEADER_NONCE] for r in seen}) == 3  # re-signed every time
    last = seen[-1]
    signed = SignedRequest(
        "PUT",
        "/v1/x/rounds/1/updates/a",
        hashlib.sha256(body).hexdigest(),
        int(last.headers[HEADER_TIMESTAMP]),
        last.headers[HEADER_NONCE],
    )
    verify_signature(
        bytes.fromhex(last.headers[HEADER_KEY]),
        bytes.fromhex(last.headers[HEADER_SIGNATURE]),
        signed.canonical(),
    )


def test_gives_up_after_the_retry_budget_and_reports_errors() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(503, json={"detail": "down"}))
    client = SignedClient(
        "http://test", Ed25519PrivateKey.generate(), transport=transport, retries=2, backoff=0
    )
    with pytest.raises(ServiceError) as caught:
        client.request("GET", "/health")
    assert caught.value.status == 503 and caught.value.detail == "down"
    refusing = httpx.MockTransport(lambda r: httpx.Response(409, json={"detail": "closed"}))
    client = SignedClient("http://test", Ed25519PrivateKey.generate(), transport=refusing)
    with pytest.raises(ServiceError, match="closed"):
        client.request("PUT", "/x", content=b"1")
