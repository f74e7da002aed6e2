"""Uploads: a client's encrypted update, streamed to disk and refused before it is stored."""

from __future__ import annotations

import hashlib
import os

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from he_agg.api.models import UploadReceipt
from he_agg.errors import ServiceError
from he_agg.server.auth import PendingAuth, complete, read_headers, request_target
from he_agg.server.deps import OCTETS, CallerDep, FederationDep, StateDep, binary, member_caller

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/federations/{federation_id}/rounds/{number}/updates", tags=["uploads"]
)


@router.put(
    "/{client}",
    status_code=201,
    response_model=UploadReceipt,
    openapi_extra={"requestBody": OCTETS},
)
async def put_update(
    number: int, client: str, federation: FederationDep, request: Request, state: StateDep
) -> JSONResponse:
    """Idempotent: the same body again gets the first answer; a different body gets 409."""
    pending = read_headers(request, state.settings.max_skew_seconds)
    declared = request.headers.get("content-length", "")
    reserve = int(declared) if declared.isdigit() else state.settings.max_inflight_upload_bytes
    with state.admission.admit(reserve):  # 503 + Retry-After past the caps, body unread
        return await _put_update(number, client, federation, request, state, pending)


async def _put_update(
    number: int,
    client: str,
    federation: FederationDep,
    request: Request,
    state: StateDep,
    pending: PendingAuth,
) -> JSONResponse:
    party = state.federations.party(federation, pending.key)
    if party is None or party.role != "client" or party.name != client:
        raise ServiceError(403, f"only enrolled client {client!r} may upload here")
    state.intake.require_enrolled(federation, number, client)
    if state.intake.existing(federation.id, number, client) is None:
        state.intake.require_open(federation.id, number)
    limit = state.intake.max_bytes(federation, client)
    too_large = f"update is larger than this federation's {limit} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, too_large)
    fd, temporary = state.blobs.temporary()
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ServiceError(
                        413, f"update is larger than this federation's {limit} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        caller = complete(
            pending,
            request.method,
            request_target(request),
            digest.hexdigest(),
            state.store,
            state.admin_keys,
        )
        receipt = await run_in_threadpool(
            state.intake.accept, federation, number, client, caller, temporary, size
        )
    finally:
        temporary.unlink(missing_ok=True)
    return JSONResponse(status_code=201, content=receipt.model_dump())


@router.get(
    "/{client}",
    response_class=Response,
    responses=binary("the upload envelope (he_agg.envelope, format 3) as stored"),
)
def get_update(
    number: int, client: str, federation: FederationDep, signed: CallerDep, state: StateDep
) -> Response:
    """Members fetch every listed upload to re-check signatures and recompute the sum."""
    member_caller(state, federation, signed.caller)
    return Response(
        state.publisher.upload_blob(federation, number, client),
        media_type="application/octet-stream",
    )
