"""Federations: created by an admin; read by their parties; the collective public key."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from he_agg.api.models import (
    Activity,
    EpochOut,
    EpochRequest,
    FederationCreate,
    FederationOut,
    KeyStatements,
)
from he_agg.api.states import KeygenPhase
from he_agg.server.deps import (
    CallerDep,
    EpochQuery,
    FederationDep,
    StateDep,
    binary,
    require_admin,
    require_party,
)
from he_agg.server.watch import wait_for_change

__all__ = ["router"]

router = APIRouter(prefix="/v1/federations", tags=["federations"])
MAX_WAIT_SECONDS = 30.0  # a long poll's longest wait (below common proxies' idle timeouts)
PARTIES = ("client", "member", "admin")


@router.post(
    "",
    status_code=201,
    response_model=FederationOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/FederationCreate"}}
            }
        }
    },
)
def create_federation(signed: CallerDep, state: StateDep) -> FederationOut:
    require_admin(signed.caller)
    body = FederationCreate.model_validate_json(signed.body)
    federation = state.federations.create(body, signed.caller.key)
    return state.federations.describe(federation, state.keygen.phase(federation))


@router.get("/{federation_id}", response_model=FederationOut)
def read_federation(signed: CallerDep, federation: FederationDep, state: StateDep) -> FederationOut:
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return state.federations.describe(federation, state.keygen.phase(federation))


@router.get(
    "/{federation_id}/roster",
    response_class=Response,
    responses=binary(
        "the signed roster (he_agg.roster.SignedRoster JSON)",
        "application/json",
        {"type": "object"},
    ),
)
def roster(signed: CallerDep, federation: FederationDep, state: StateDep) -> Response:
    """The admin-signed roster as created. Parties compare it with the one they pinned."""
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return Response(state.federations.roster(federation), media_type="application/json")


@router.get(
    "/{federation_id}/rosters",
    response_class=Response,
    responses=binary(
        "a JSON list of signed roster texts, oldest first",
        "application/json",
        {"type": "array", "items": {"type": "string"}},
    ),
)
def rosters(signed: CallerDep, federation: FederationDep, state: StateDep) -> Response:
    """Every admin-signed roster, oldest first: parties follow the chain from their pin."""
    require_party(state, federation, signed.caller, "client", "member", "admin")
    body = json.dumps(state.federations.rosters(federation))
    return Response(body, media_type="application/json")


@router.get("/{federation_id}/epochs", response_model=list[EpochOut])
def epochs(signed: CallerDep, federation: FederationDep, state: StateDep) -> list[EpochOut]:
    """The key epochs, oldest first: which is current, which are retired."""
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return state.keygen.epochs(federation)


@router.post(
    "/{federation_id}/epochs",
    status_code=201,
    response_model=list[EpochOut],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/EpochRequest"}}
            }
        }
    },
)
def request_epoch(signed: CallerDep, federation: FederationDep, state: StateDep) -> list[EpochOut]:
    """The admin starts the next key epoch: a re-key, or a roster change."""
    require_admin(signed.caller)
    body = EpochRequest.model_validate_json(signed.body)
    ready = state.keygen.phase(federation, federation.newest.number) == KeygenPhase.READY
    changed = state.federations.request_epoch(federation, body, signed.caller.key, ready)
    return state.keygen.epochs(changed)


@router.get("/{federation_id}/key-statements", response_model=KeyStatements)
def key_statements(
    signed: CallerDep, federation: FederationDep, state: StateDep, epoch: EpochQuery = None
) -> KeyStatements:
    """Every member's signed statement about an epoch's key (clients check all n)."""
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return state.keygen.statements(federation, epoch)


@router.get(
    "/{federation_id}/public-key",
    response_class=Response,
    responses=binary("the collective key as SEAL's uncompressed PublicKey bytes"),
)
def public_key(
    signed: CallerDep, federation: FederationDep, state: StateDep, epoch: EpochQuery = None
) -> Response:
    """An epoch's collective public key (omitted: the current one) as SEAL bytes."""
    require_party(state, federation, signed.caller, "client", "member", "admin")
    key = state.federations.public_key(federation, epoch)
    return Response(key, media_type="application/octet-stream")


@router.get("/{federation_id}/watch", response_model=Activity)
async def watch(
    signed: CallerDep,
    federation: FederationDep,
    state: StateDep,
    since: Annotated[str | None, Query(max_length=64, pattern="^[0-9a-f]*$")] = None,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 0.0,
) -> Activity:
    """Long poll: the federation's activity tag, answered as soon as it differs from
    ``since`` or after ``wait`` seconds (at most 30) with the same tag. Parties wait here
    instead of polling the rounds (he_agg.server.watch)."""
    await run_in_threadpool(require_party, state, federation, signed.caller, *PARTIES)
    return Activity(tag=await wait_for_change(state, federation.id, since, wait))
