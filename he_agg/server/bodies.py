"""Reading request bodies: paced (a stalled or slow body gets 408) and held to the length
and sha256 its caller signed (:class:`he_agg.server.auth.BodyCheck`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import Request

from he_agg.errors import ServiceError
from he_agg.server.auth import BodyCheck, PendingAuth
from he_agg.server.config import Settings

__all__ = ["paced", "read_signed_body"]


async def paced(
    request: Request, settings: Settings, turns: asyncio.Semaphore | None = None
) -> AsyncIterator[bytes]:
    """The body's chunks, refused with 408 if a chunk takes longer than
    ``body_chunk_seconds`` to arrive or, after the first ``body_chunk_seconds``, the mean
    rate falls below ``min_rate`` bytes per second (a slow-loris client holds no slot and
    no temp file for long). With ``turns``, each chunk is awaited holding one of its slots
    (FIFO: the bodies take turns); time spent waiting for a turn counts toward neither limit."""
    chunk_seconds, min_rate = settings.body_chunk_seconds, settings.min_rate
    stream = request.stream().__aiter__()
    waited, received = 0.0, 0
    while True:
        if turns is not None:
            await turns.acquire()
        started = time.monotonic()
        try:
            # a timer per chunk, not a task (asyncio.wait_for's): the event loop's time
            async with asyncio.timeout(chunk_seconds):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise ServiceError(408, f"no body data for {chunk_seconds:g} s") from exc
        finally:
            waited += time.monotonic() - started
            if turns is not None:
                turns.release()
        received += len(chunk)
        if waited > chunk_seconds and received / waited < min_rate:
            raise ServiceError(408, f"the body arrives slower than {min_rate:g} bytes/s")
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
