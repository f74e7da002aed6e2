"""Uploads: a client's encrypted update, streamed to disk and refused before it is stored."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from typing import BinaryIO

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
    limit = await run_in_threadpool(_check_before_body, state, federation, number, client, pending)
    too_large = f"update is larger than this federation's {limit} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, too_large)
    fd, temporary = state.blobs.temporary()
    digest, size = hashlib.sha256(), 0
    settings = state.settings
    try:
        with os.fdopen(fd, "wb") as out:
            pending_bytes: list[bytes] = []  # written to disk off the event loop, 1 MiB at a time
            async for chunk in _paced(request, settings.body_chunk_seconds, settings.min_rate):
                size += len(chunk)
                if size > limit:
                    raise ServiceError(413, too_large)
                digest.update(chunk)
                pending_bytes.append(chunk)
                if sum(map(len, pending_bytes)) >= _WRITE_BATCH:
                    await run_in_threadpool(out.write, b"".join(pending_bytes))
                    pending_bytes.clear()
            await run_in_threadpool(_finish, out, b"".join(pending_bytes))
        caller = await run_in_threadpool(
            complete,
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


_WRITE_BATCH = 1 << 20


def _check_before_body(
    state: StateDep, federation: FederationDep, number: int, client: str, pending: PendingAuth
) -> int:
    """Who may upload here, to an open round: database work, in a worker thread. Returns
    the largest body this client may send."""
    party = state.federations.party(federation, pending.key)
    if party is None or party.role != "client" or party.name != client:
        raise ServiceError(403, f"only enrolled client {client!r} may upload here")
    state.intake.require_enrolled(federation, number, client)
    if state.intake.existing(federation.id, number, client) is None:
        state.intake.require_open(federation.id, number)
    return state.intake.max_bytes(federation, client)


def _finish(out: BinaryIO, tail: bytes) -> None:
    out.write(tail)
    out.flush()
    os.fsync(out.fileno())


async def _paced(request: Request, chunk_seconds: float, min_rate: float) -> AsyncIterator[bytes]:
    """The body's chunks, refused with 408 if a chunk takes longer than ``chunk_seconds``
    to arrive or, after the first ``chunk_seconds``, the mean rate falls below ``min_rate``
    bytes per second (a slow-loris client holds no slot and no temp file for long)."""
    stream = request.stream().__aiter__()
    started, received = time.monotonic(), 0
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=chunk_seconds)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise ServiceError(408, f"no body data for {chunk_seconds:g} s") from exc
        received += len(chunk)
        elapsed = time.monotonic() - started
        if elapsed > chunk_seconds and received / elapsed < min_rate:
            raise ServiceError(408, f"the body arrives slower than {min_rate:g} bytes/s")
        yield chunk


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
