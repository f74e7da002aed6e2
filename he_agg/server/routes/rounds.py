"""Rounds: opened with a deadline by an admin, read by every party, closed early by an admin."""

from __future__ import annotations

from fastapi import APIRouter

from he_agg.api.models import RoundOpen, RoundOut
from he_agg.api.states import RoundState
from he_agg.server.deps import (
    CallerDep,
    FederationDep,
    Index,
    StateDep,
    require_admin,
    require_party,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/federations/{federation_id}/rounds", tags=["rounds"])


@router.post(
    "",
    status_code=201,
    response_model=RoundOut,
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RoundOpen"}}}
        }
    },
)
def open_round(signed: CallerDep, federation: FederationDep, state: StateDep) -> RoundOut:
    require_admin(signed.caller)
    body = RoundOpen.model_validate_json(signed.body)
    return state.rounds.open(federation, body.deadline_seconds)


@router.get("", response_model=list[RoundOut])
def list_rounds(
    signed: CallerDep,
    federation: FederationDep,
    state: StateDep,
    round_state: RoundState | None = None,
) -> list[RoundOut]:
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return state.rounds.list_rounds(federation.id, round_state)


@router.get("/{number}", response_model=RoundOut)
def read_round(
    signed: CallerDep, number: Index, federation: FederationDep, state: StateDep
) -> RoundOut:
    require_party(state, federation, signed.caller, "client", "member", "admin")
    return state.rounds.status(federation.id, number)


@router.post("/{number}/close", response_model=RoundOut)
def close_round(
    signed: CallerDep, number: Index, federation: FederationDep, state: StateDep
) -> RoundOut:
    require_admin(signed.caller)
    return state.rounds.close(federation, number)
