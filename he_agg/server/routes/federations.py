"""Federations: created by an admin; read by their parties; the collective public key."""

from __future__ import annotations

from fastapi import APIRouter, Response

from he_agg.api.models import FederationCreate, FederationOut, KeyStatements
from he_agg.server.deps import CallerDep, FederationDep, StateDep, require_admin, require_party

__all__ = ["router"]

router = APIRouter(prefix="/v1/federations", tags=["federations"])


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
def read_federation(federation: FederationDep, signed: CallerDep, state: StateDep) -> FederationOut:
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return state.federations.describe(federation, state.keygen.phase(federation))


@router.get("/{federation_id}/roster", response_class=Response)
def roster(federation: FederationDep, signed: CallerDep, state: StateDep) -> Response:
    """The admin-signed roster as created. Parties compare it with the one they pinned."""
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return Response(state.federations.roster(federation), media_type="application/json")


@router.get("/{federation_id}/key-statements", response_model=KeyStatements)
def key_statements(federation: FederationDep, signed: CallerDep, state: StateDep) -> KeyStatements:
    """Every member's signed statement about the collective key (clients check all n)."""
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return state.keygen.statements(federation)


@router.get("/{federation_id}/public-key", response_class=Response)
def public_key(federation: FederationDep, signed: CallerDep, state: StateDep) -> Response:
    """The collective public key as SEAL bytes (uncompressed), once the DKG has produced it."""
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return Response(state.federations.public_key(federation), media_type="application/octet-stream")
