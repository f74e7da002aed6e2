"""Key generation: commitments, public-key shares, relay of encrypted Shamir shares."""

from __future__ import annotations

from fastapi import APIRouter, Response

from he_agg.api.models import CommitmentIn, KeygenStatus
from he_agg.errors import ServiceError
from he_agg.server.deps import (
    CallerDep,
    EpochQuery,
    FederationDep,
    Index,
    StateDep,
    binary,
    member_caller,
    octets,
    require_party,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/federations/{federation_id}/keygen", tags=["keygen"])


@router.get("", response_model=KeygenStatus)
def keygen_status(
    signed: CallerDep, federation: FederationDep, state: StateDep, epoch: EpochQuery = None
) -> KeygenStatus:
    """The DKG of ``epoch`` (omitted: the newest epoch, the one members take part in)."""
    require_party(state, federation, signed.caller, "member", "client", "admin")
    return state.keygen.status(federation, epoch)


@router.put(
    "/commitments/{member}",
    status_code=204,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/CommitmentIn"}}
            }
        }
    },
)
def put_commitment(
    signed: CallerDep, member: Index, federation: FederationDep, state: StateDep
) -> Response:
    member_caller(state, federation, signed.caller, member)
    body = CommitmentIn.model_validate_json(signed.body)
    state.keygen.add_commitment(federation, member, body.commitment, body.signature)
    return Response(status_code=204)


@router.put(
    "/statements/{member}",
    status_code=204,
    openapi_extra=octets(
        "a member's signed key statement (he_agg.key_statement.KeyStatement bytes)"
    ),
)
def put_key_statement(
    signed: CallerDep, member: Index, federation: FederationDep, state: StateDep
) -> Response:
    """A member's signed statement that the published key is the sum of the reveals."""
    member_caller(state, federation, signed.caller, member)
    state.keygen.add_statement(federation, member, signed.body)
    return Response(status_code=204)


@router.put(
    "/public-key-shares/{member}",
    status_code=204,
    openapi_extra=octets(
        "a member's public-key share p_i (he_agg.collective_key.PublicKeyShare bytes)"
    ),
)
def put_public_key_share(
    signed: CallerDep, member: Index, federation: FederationDep, state: StateDep
) -> Response:
    member_caller(state, federation, signed.caller, member)
    state.keygen.add_public_key_share(federation, member, signed.body)
    return Response(status_code=204)


@router.get(
    "/public-key-shares/{member}",
    response_class=Response,
    responses=binary("a member's public-key share p_i (he_agg.collective_key.PublicKeyShare)"),
)
def get_public_key_share(
    signed: CallerDep,
    member: Index,
    federation: FederationDep,
    state: StateDep,
    epoch: EpochQuery = None,
) -> Response:
    member_caller(state, federation, signed.caller)
    return Response(
        state.keygen.public_key_share(federation, member, epoch),
        media_type="application/octet-stream",
    )


@router.put(
    "/shamir-shares/{sender}/{recipient}",
    status_code=204,
    openapi_extra=octets(
        "a sealed, signed Shamir share (he_agg.share_message.EncryptedShare bytes)"
    ),
)
def put_shamir_share(
    signed: CallerDep, sender: Index, recipient: Index, federation: FederationDep, state: StateDep
) -> Response:
    member_caller(state, federation, signed.caller, sender)
    state.keygen.add_shamir_share(federation, sender, recipient, signed.body)
    return Response(status_code=204)


@router.get(
    "/shamir-shares/{sender}/{recipient}",
    response_class=Response,
    responses=binary("a sealed, signed Shamir share (he_agg.share_message.EncryptedShare)"),
)
def get_shamir_share(
    signed: CallerDep,
    sender: Index,
    recipient: Index,
    federation: FederationDep,
    state: StateDep,
    epoch: EpochQuery = None,
) -> Response:
    me = member_caller(state, federation, signed.caller)
    if me != recipient:
        raise ServiceError(403, "only the recipient may fetch its encrypted share")
    return Response(
        state.keygen.shamir_share(federation, sender, recipient, epoch),
        media_type="application/octet-stream",
    )
