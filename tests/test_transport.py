"""The signed client retries connection errors and 503 with the same body, fresh signatures;
the SDK on top of it builds URLs with ``he_agg.api.paths`` and parses the shared wire models."""

import hashlib
import json

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from clients.admin import Admin
from clients.harness import federation_spec
from clients.participant import Participant
from he_agg.api import paths
from he_agg.api.models import FederationCreate, RoundOut
from he_agg.api.states import FederationMode, RoundState
from he_agg.api.transport import SignedClient
from he_agg.errors import ServiceError, TransportError
from he_agg.params import DEFAULT
from he_agg.request_signing import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SignedRequest,
    verify_signature,
)
from keys.identity import Identity


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
        length=len(body),
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


def test_a_server_that_is_down_is_tried_at_least_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the server restarts, the waits between connection attempts never exceed
    max_backoff (1 s): a member's share reaches the server within a second of its return,
    inside any share timeout. The budget still spans seconds of outage."""
    slept: list[float] = []
    monkeypatch.setattr("he_agg.api.transport.time.sleep", slept.append)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = SignedClient(
        "http://test", Ed25519PrivateKey.generate(), transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(TransportError):
        client.request("PUT", "/share", content=b"share")
    assert len(slept) == client.retries == 12
    assert max(slept) <= client.max_backoff == 1.0
    assert slept[-1] >= 0.5  # doubled up to the cap, jittered by at most half
    assert 4.0 <= sum(slept) <= 11.0  # about 5 to 11 s of outage covered


def _round(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "federation": "f",
        "number": 3,
        "state": "open",
        "deadline": 0.0,
        "uploads": [],
        "reason": None,
        "attempt": 0,
        "decryption_set": [],
        "model_ready": False,
    }
    return {**body, **changes}


def test_sdk_asks_the_paths_module_and_parses_round_out() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        if request.method == "POST":
            return httpx.Response(201, json=_round(number=4))
        return httpx.Response(200, json=_round(state="published", model_ready=True))

    transport = httpx.MockTransport(handler)
    participant = Participant(
        "http://test", "f", "bank-1", Ed25519PrivateKey.generate(), transport=transport
    )
    status = participant.round_status(3)
    assert isinstance(status, RoundOut) and status.state == RoundState.PUBLISHED
    admin = Admin("http://test", Ed25519PrivateKey.generate(), transport=transport)
    assert admin.open_round("f", 60).number == 4
    assert seen == [paths.round("f", 3), paths.rounds("f")]


def test_sdk_refuses_a_response_missing_a_field() -> None:
    broken = {k: v for k, v in _round().items() if k != "model_ready"}
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=broken))
    participant = Participant(
        "http://test", "f", "bank-1", Ed25519PrivateKey.generate(), transport=transport
    )
    with pytest.raises(ValidationError, match="model_ready"):
        participant.round_status(3)


def test_federation_spec_names_members_and_drops_them_in_plaintext() -> None:
    clients = {f"bank-{i}": Identity.generate(0).public for i in (1, 2)}
    members = [Identity.generate(i).public for i in (1, 2, 3)]
    spec = federation_spec("f", clients, members, params=DEFAULT, threshold=2, k_min=2)
    assert [m.name for m in spec.members] == ["member-1", "member-2", "member-3"]
    assert spec.parameters == DEFAULT.to_dict() and spec.threshold == 2
    body = json.loads(spec.model_dump_json())
    assert FederationCreate.model_validate(body) == spec  # what the server parses
    plain = federation_spec("f", clients, members, mode=FederationMode.PLAINTEXT)
    assert plain.members == [] and plain.threshold == 1 and plain.parameters is None
    with pytest.raises(ValidationError, match="threshold"):
        federation_spec("f", clients, members[:1], threshold=2)
