"""The aggregate, the decryption request (set, uploads and endorsements), members'
endorsements of a round's upload set, and their decryption shares."""

from __future__ import annotations

from fastapi import APIRouter, Response

from he_agg.api.models import DecryptionRequest
from he_agg.server.deps import (
    CallerDep,
    FederationDep,
    Index,
    StateDep,
    binary,
    member_caller,
    octets,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/federations/{federation_id}/rounds/{number}", tags=["decryption"])


@router.get(
    "/aggregate",
    response_class=Response,
    responses=binary("the aggregate envelope (he_agg.envelope, client _aggregate)"),
)
def get_aggregate(
    signed: CallerDep, number: Index, federation: FederationDep, state: StateDep
) -> Response:
    member_caller(state, federation, signed.caller)
    return Response(
        state.publisher.aggregate(federation, number), media_type="application/octet-stream"
    )


@router.get("/decryption", response_model=DecryptionRequest)
def get_decryption_request(
    signed: CallerDep, number: Index, federation: FederationDep, state: StateDep
) -> DecryptionRequest:
    member_caller(state, federation, signed.caller)
    return state.publisher.decryption_request(federation, number)


@router.put(
    "/decryption/{attempt}/shares/{member}",
    status_code=204,
    openapi_extra=octets(
        "a member's signed decryption share (he_agg.combine.DecryptionShare bytes)"
    ),
)
def put_decryption_share(
    signed: CallerDep,
    number: Index,
    attempt: Index,
    member: Index,
    federation: FederationDep,
    state: StateDep,
) -> Response:
    member_caller(state, federation, signed.caller, member)
    state.publisher.accept_share(federation, number, attempt, member, signed.body)
    return Response(status_code=204)


@router.put(
    "/endorsements/{member}",
    status_code=204,
    openapi_extra=octets(
        "a member's signed endorsement of the upload set (he_agg.endorsement JSON)"
    ),
)
def put_endorsement(
    signed: CallerDep, number: Index, member: Index, federation: FederationDep, state: StateDep
) -> Response:
    """A member's signed endorsement of the round's upload set (he_agg.endorsement JSON)."""
    member_caller(state, federation, signed.caller, member)
    state.publisher.accept_endorsement(federation, number, member, signed.body)
    return Response(status_code=204)
