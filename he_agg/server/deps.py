"""FastAPI dependencies: the app state, the signed caller, the federation and its parties."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from he_agg.api.states import PartyRole
from he_agg.errors import ServiceError
from he_agg.server.admission import Admission
from he_agg.server.auth import Caller, body_digest, complete, read_headers, request_target
from he_agg.server.config import Settings
from he_agg.server.federations import Federation, Federations
from he_agg.server.intake import Intake
from he_agg.server.keygen import KeygenRelay
from he_agg.server.publishing import Publisher
from he_agg.server.rounds import Rounds
from he_agg.server.store import BlobStore, PartyRow, Store

__all__ = [
    "OCTETS",
    "AppState",
    "CallerDep",
    "FederationDep",
    "StateDep",
    "binary",
    "member_caller",
    "require_admin",
    "require_party",
]

MAX_SMALL_BODY = 512 * 1024 * 1024
# OpenAPI description of a raw-bytes request body (the routes read it themselves)
OCTETS = {
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
}


def binary(description: str, media_type: str = "application/octet-stream") -> dict[int | str, Any]:
    """``responses=`` for a route whose 200 is raw bytes in a documented format."""
    schema: dict[str, Any] = {"type": "string", "format": "binary"}
    if media_type != "application/octet-stream":
        schema = {"type": "string"}
    return {200: {"description": description, "content": {media_type: {"schema": schema}}}}


@dataclass
class AppState:
    settings: Settings
    store: Store
    blobs: BlobStore
    federations: Federations
    keygen: KeygenRelay
    rounds: Rounds
    intake: Intake
    publisher: Publisher
    admission: Admission

    @classmethod
    def build(cls, settings: Settings, store: Store, blobs: BlobStore) -> AppState:
        federations = Federations(store, blobs)
        keygen = KeygenRelay(store, blobs, federations)
        publisher = Publisher(store, blobs)
        rounds = Rounds(store, blobs, federations, keygen, publisher)
        intake = Intake(store, blobs)  # complete rounds are closed by the clock (rounds.tick)
        admission = Admission(
            settings.max_inflight_upload_bytes,
            settings.max_inflight_uploads,
            settings.retry_after_seconds,
        )
        return cls(
            settings, store, blobs, federations, keygen, rounds, intake, publisher, admission
        )

    @property
    def admin_keys(self) -> frozenset[str]:
        return frozenset(key.lower() for key in self.settings.admin_keys)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.he_agg
    return state


StateDep = Annotated[AppState, Depends(get_state)]


@dataclass(frozen=True)
class SignedBody:
    caller: Caller
    body: bytes


async def signed_caller(request: Request, state: StateDep) -> SignedBody:
    """Authenticate a request whose body is small enough to hold in memory."""
    pending = read_headers(request, state.settings.max_skew_seconds)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_SMALL_BODY:
        raise HTTPException(413, "request body too large")
    body = await request.body()
    _refuse_non_finite(body)
    caller = await run_in_threadpool(  # the nonce is spent in the database: off the loop
        complete,
        pending,
        request.method,
        request_target(request),
        body_digest(body),
        state.store,
        state.admin_keys,
    )
    return SignedBody(caller, body)


CallerDep = Annotated[SignedBody, Depends(signed_caller)]


def _no_constant(name: str) -> float:
    raise ServiceError(422, f"the request body holds a non-finite number ({name})")


def _refuse_non_finite(body: bytes) -> None:
    """NaN and ±Infinity are not JSON, but Python's parser and pydantic's accept them: a JSON
    body holding one is refused with a 422 before any model sees it. A body that is not
    JSON is left to the route (its model's error, or a binary format)."""
    if body.lstrip()[:1] not in (b"{", b"["):
        return
    try:
        json.loads(body, parse_constant=_no_constant)
    except ValueError:
        return


def get_federation(federation_id: str, state: StateDep) -> Federation:
    return state.federations.get(federation_id)


FederationDep = Annotated[Federation, Depends(get_federation)]


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise ServiceError(403, "this route is for the federation's administrator")


def require_party(
    state: AppState, federation: Federation, caller: Caller, *roles: str
) -> PartyRow | None:
    """The caller's enrolment in this federation; admins pass with None."""
    if caller.is_admin and "admin" in roles:
        return None
    party = state.federations.party(federation, caller.key)
    if party is None or party.role not in roles:
        raise ServiceError(403, f"this route is for {' or '.join(roles)}s of {federation.id!r}")
    return party


def member_caller(
    state: AppState, federation: Federation, caller: Caller, member: int | None = None
) -> int:
    """The caller's member index; with ``member`` given, the caller must be that member."""
    party = require_party(state, federation, caller, PartyRole.MEMBER)
    assert party is not None and party.member_index is not None
    if member is not None and party.member_index != member:
        raise ServiceError(403, f"member {party.member_index} cannot act as member {member}")
    return party.member_index
