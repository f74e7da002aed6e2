"""FastAPI dependencies: the app state, the signed caller, the federation and its parties."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from he_agg.api.states import PartyRole
from he_agg.errors import ServiceError
from he_agg.server.admission import Admission
from he_agg.server.auth import Caller, complete, read_headers, request_target
from he_agg.server.bodies import read_signed_body
from he_agg.server.changes import Changes
from he_agg.server.config import Settings
from he_agg.server.federations import Federation, Federations
from he_agg.server.intake import Intake
from he_agg.server.keygen import KeygenRelay
from he_agg.server.partials import PartialFolder
from he_agg.server.publishing import Publisher
from he_agg.server.rounds import Rounds
from he_agg.server.store import BlobStore, PartyRow, Store
from he_agg.server.sums import RoundSums

__all__ = [
    "AppState",
    "CallerDep",
    "FederationDep",
    "StateDep",
    "authenticate",
    "binary",
    "member_caller",
    "octets",
    "require_admin",
    "require_party",
]

# the least an enrolled party may send (key generation's messages); more where the
# federation's largest upload is larger
MIN_PARTY_BODY = 16 * 1024 * 1024


def octets(description: str) -> dict[str, Any]:
    """``openapi_extra=`` for a route whose request body is raw bytes in a documented format
    (the route reads them itself)."""
    schema = {"type": "string", "format": "binary"}
    body = {"description": description, "required": True}
    return {"requestBody": body | {"content": {"application/octet-stream": {"schema": schema}}}}


def binary(
    description: str,
    media_type: str = "application/octet-stream",
    schema: dict[str, Any] | None = None,
) -> dict[int | str, Any]:
    """``responses=`` for a route whose 200 is raw bytes in a documented format (``schema``
    for JSON that the route passes through as it was stored)."""
    if schema is None:
        schema = {"type": "string", "format": "binary"}
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
    changes: Changes

    @classmethod
    def build(cls, settings: Settings, store: Store, blobs: BlobStore) -> AppState:
        federations = Federations(store, blobs)
        keygen = KeygenRelay(store, blobs, federations)
        publisher = Publisher(store, blobs)
        # each open round's running sum, kept as uploads arrive; replicas share theirs
        shared = None
        if settings.partial_seconds is not None:
            shared = PartialFolder(settings.blob_root / "partials", settings.replica)
        sums = RoundSums(blobs, shared)
        rounds = Rounds(store, blobs, federations, keygen, publisher, sums)
        # complete rounds are closed by the clock (rounds.tick), not in an upload's request
        intake = Intake(store, blobs, sums, validation_slots=settings.validation_slots)
        admission = Admission(
            settings.max_inflight_upload_bytes,
            settings.max_inflight_uploads,
            settings.retry_after_seconds,
            settings.receive_slots,
        )
        changes = Changes()  # long polls wake when this process commits
        store.on_commit.append(changes.committed)
        return cls(
            settings,
            store,
            blobs,
            federations,
            keygen,
            rounds,
            intake,
            publisher,
            admission,
            changes,
        )

    @property
    def admin_keys(self) -> frozenset[str]:
        return frozenset(key.lower() for key in self.settings.admin_keys)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.he_agg
    return state


StateDep = Annotated[AppState, Depends(get_state)]

# round numbers, attempts, member and epoch indices in a path or query: far beyond any
# federation and inside every store's INTEGER column, so a larger one is a 422, never an
# overflow in the driver (10**30 was a 500)
INDEX_MAX = 2**31 - 1
Index = Annotated[int, Path(ge=0, le=INDEX_MAX, description="a non-negative index")]
EpochQuery = Annotated[
    int | None, Query(ge=0, le=INDEX_MAX, description="a key epoch (default: the current)")
]


@dataclass(frozen=True)
class SignedBody:
    caller: Caller
    body: bytes


async def authenticate(request: Request, state: AppState) -> Caller:
    """The signed caller, from the headers alone (the body is not read)."""
    pending = read_headers(request, state.settings.max_skew_seconds)
    return await run_in_threadpool(  # the nonce is spent in the database: off the loop
        complete, pending, request.method, request_target(request), state.store, state.admin_keys
    )


async def signed_caller(request: Request, state: StateDep) -> SignedBody:
    """Authenticate a request whose body is small enough to hold in memory: the caller's
    identity and role are settled, and its signed length held to that role's limit, before
    the body is read."""
    caller = await authenticate(request, state)
    limit = await run_in_threadpool(_body_limit, state, request, caller)
    if caller.signed.length > limit:
        raise HTTPException(413, f"request body of {caller.signed.length} bytes; at most {limit}")
    body = await read_signed_body(request, caller.signed, state.settings)
    _refuse_non_finite(body)
    return SignedBody(caller, body)


def _body_limit(state: AppState, request: Request, caller: Caller) -> int:
    """The largest body this caller may send here: an administrator's setting, or, for a
    party, its federation's largest upload (never below MIN_PARTY_BODY). A key that is
    neither is refused (403) with its body unread."""
    if caller.is_admin:
        return state.settings.max_admin_body_bytes
    federation_id = request.path_params.get("federation_id")
    if federation_id is None:
        raise ServiceError(403, "this route is for the federation's administrator")
    federation = state.federations.get(federation_id)
    party = state.federations.party(federation, caller.key)
    if party is None:
        raise ServiceError(403, f"this key is not enrolled in federation {federation_id!r}")
    return max(state.intake.max_bytes(federation, party.name), MIN_PARTY_BODY)


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
