"""Uploads: a client's encrypted update, streamed to disk and refused before it is stored."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from he_agg.api.models import UploadReceipt, UploadRecord
from he_agg.errors import ServiceError
from he_agg.server.auth import BodyCheck, Caller, complete, read_headers, request_target
from he_agg.server.bodies import paced
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

router = APIRouter(
    prefix="/v1/federations/{federation_id}/rounds/{number}/updates", tags=["uploads"]
)


@router.put(
    "/{client}",
    status_code=201,
    response_model=UploadReceipt,
    openapi_extra=octets(
        "the encrypted update: an upload envelope (he_agg.envelope, format 3; ARCHITECTURE.md)"
    ),
)
async def put_update(
    number: Index, client: str, federation: FederationDep, request: Request, state: StateDep
) -> JSONResponse:
    """Idempotent: the same body again gets the first answer; a different body gets 409.

    Order: the caller is authenticated from its headers and its role, enrolment and the
    round checked, and its signed length held to the federation's limit, before a byte of
    the body is read; past the admission caps it gets 503 + Retry-After."""
    pending = read_headers(request, state.settings.max_skew_seconds)
    with state.admission.admit(pending.length):  # 503 + Retry-After past the caps, body unread
        caller = await run_in_threadpool(
            complete,
            pending,
            request.method,
            request_target(request),
            state.store,
            state.admin_keys,
        )
        limit = await run_in_threadpool(
            _check_before_body, state, federation, number, client, caller
        )
        if pending.length > limit:
            raise ServiceError(413, f"update is larger than this federation's {limit} bytes")
        receipt = await _receive(number, client, federation, request, state, caller)
    return JSONResponse(status_code=201, content=receipt.model_dump())


async def _receive(
    number: Index,
    client: str,
    federation: FederationDep,
    request: Request,
    state: StateDep,
    caller: Caller,
) -> UploadReceipt:
    """Stream the body to a scratch file, held to the signed length and digest, then hand
    it to the intake; the scratch file is gone afterwards, whatever happened."""
    # on the loop (microseconds): a cancelled await here would leave a live scratch file
    fd, temporary = state.blobs.temporary()
    check = BodyCheck(caller.signed)
    try:
        with os.fdopen(fd, "wb") as out:
            # hashed and written off the event loop, a MiB at a time; the loop only counts
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in paced(request, state.settings, state.admission.receiving):
                check.count(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= _WRITE_BATCH:
                    await run_in_threadpool(_write, out, check, pending)
                    pending, pending_size = [], 0
            await run_in_threadpool(_write, out, check, pending)
            check.finish()
            await run_in_threadpool(_sync, out)
        return await run_in_threadpool(
            state.intake.accept, federation, number, client, caller, temporary, check.size
        )
    finally:  # not awaited: a cancelled request must still remove its file
        state.blobs.discard(temporary)


_WRITE_BATCH = 1 << 20


def _check_before_body(
    state: StateDep, federation: FederationDep, number: Index, client: str, caller: Caller
) -> int:
    """Who may upload here, to an open round: database work, in a worker thread. Returns
    the largest body this client may send."""
    party = state.federations.party(federation, caller.key)
    if party is None or party.role != "client":
        raise ServiceError(403, f"this key is not an enrolled client of {federation.id!r}")
    if party.name != client:
        raise ServiceError(
            403, f"this key belongs to client {party.name!r}; only {client!r} may upload here"
        )
    state.intake.require_enrolled(federation, number, client)
    if state.intake.existing(federation.id, number, client) is None:
        state.intake.require_open(federation.id, number)
    return state.intake.max_bytes(federation, client)


def _write(out: BinaryIO, check: BodyCheck, chunks: list[bytes]) -> None:
    for chunk in chunks:
        check.hash(chunk)
    out.writelines(chunks)


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


@router.get(
    "/{client}",
    response_class=Response,
    responses=binary("the upload envelope (he_agg.envelope, format 3) as stored"),
)
def get_update(
    signed: CallerDep, number: Index, client: str, federation: FederationDep, state: StateDep
) -> Response:
    """Members fetch every listed upload to re-check signatures and recompute the sum."""
    member_caller(state, federation, signed.caller)
    blob = state.publisher.open_upload(federation, number, client)
    size = os.fstat(blob.fileno()).st_size
    return StreamingResponse(
        _windows(blob),
        media_type="application/octet-stream",
        headers={"Content-Length": str(size)},
    )


def _windows(blob: BinaryIO) -> Iterator[bytes]:
    """A stored upload a window at a time (each read in a worker thread), then closed."""
    with blob:
        while window := blob.read(_WRITE_BATCH):
            yield window


@router.get("", response_model=list[UploadRecord])
def list_updates(
    signed: CallerDep, number: Index, federation: FederationDep, state: StateDep
) -> list[UploadRecord]:
    """The round's stored uploads so far (signed records), for members that verify and add
    each as it arrives, so that at the close they hold the sum already (keys.presum)."""
    member_caller(state, federation, signed.caller)
    return state.publisher.upload_records(federation, number)
