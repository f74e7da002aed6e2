"""Reading request bodies: paced (a stalled or slow body gets 408) and held to the length
and sha256 its caller signed (:class:`he_agg.server.auth.BodyCheck`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import Request
from starlette.requests import ClientDisconnect

from he_agg.errors import ServiceError
from he_agg.server.auth import BodyCheck, PendingAuth
from he_agg.server.config import Settings

__all__ = ["paced", "read_signed_body"]


async def paced(
    request: Request, settings: Settings, turns: asyncio.Semaphore | None = None
) -> AsyncIterator[bytes]:
    """The body's chunks, refused with 408 if no data arrives for ``body_chunk_seconds``
    or, after the first ``body_chunk_seconds``, the mean rate falls below ``min_rate`` bytes
    per second (a slow-loris client holds no slot and no temp file for long).

    With ``turns``, each chunk is awaited holding one of its slots (FIFO: the bodies take
    turns, and the others' connections wait under TCP flow control). A body with no data
    ready within ``turn_seconds`` gives its turn back and queues again, so a client that
    sends slowly, on purpose or not, holds a turn for at most that long at a time. Time
    spent queueing for a turn counts toward neither limit; time holding one does."""
    chunk_seconds, min_rate = settings.body_chunk_seconds, settings.min_rate
    patience = chunk_seconds if turns is None else min(settings.turn_seconds, chunk_seconds)
    waited = stalled = 0.0  # holding a turn: in all, and since the last data
    received = 0
    more = True
    while more:
        if turns is not None:
            await turns.acquire()
        started = time.monotonic()
        try:
            # a timer, not a task per chunk (asyncio.wait_for's): the event loop's time. A
            # receive cancelled by it loses nothing: uvicorn keeps the bytes for the next
            async with asyncio.timeout(patience):
                message = await request.receive()
        except TimeoutError:
            message = None
        finally:
            held = time.monotonic() - started
            if turns is not None:
                turns.release()
        waited += held
        if message is None:
            stalled += held
            if stalled >= chunk_seconds:
                raise ServiceError(408, f"no body data for {chunk_seconds:g} s")
            continue
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        stalled = 0.0
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        received += len(chunk)
        if waited > chunk_seconds and received / waited < min_rate:
            raise ServiceError(408, f"the body arrives slower than {min_rate:g} bytes/s")
        if chunk:
            yield chunk


async def read_signed_body(request: Request, signed: PendingAuth, settings: Settings) -> bytes:
    """A small body, in memory, exactly as signed (its length was checked against the
    caller's limit before this is called)."""
    check = BodyCheck(signed)
    chunks: list[bytes] = []
    if signed.length:
        async for chunk in paced(request, settings):
            check.update(chunk)
            chunks.append(chunk)
    check.finish()
    return b"".join(chunks)
