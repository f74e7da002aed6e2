"""The published model of a round: float64 values, with the manifest in a header."""

from __future__ import annotations

from fastapi import APIRouter, Response

from he_agg.packing import Manifest
from he_agg.request_signing import HEADER_MANIFEST
from he_agg.server.deps import CallerDep, FederationDep, Index, StateDep, binary, require_party

__all__ = ["router"]

router = APIRouter(prefix="/v1/federations/{federation_id}/rounds/{number}", tags=["model"])


@router.get(
    "/model",
    response_class=Response,
    responses=binary(
        "the averaged model: little-endian float64 values; the manifest header names the tensors"
    ),
)
def get_model(
    signed: CallerDep, number: Index, federation: FederationDep, state: StateDep
) -> Response:
    require_party(state, federation, signed.caller, "client", "member", "admin")
    manifest, values = state.publisher.model(federation, number)
    header = Manifest.from_json(manifest).to_header()
    return Response(
        values, media_type="application/octet-stream", headers={HEADER_MANIFEST: header}
    )
