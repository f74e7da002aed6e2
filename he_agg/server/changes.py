"""Waking this process's long polls when its store commits a write (he_agg.server.watch)."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Changes"]


class Changes:
    """Wakes this process's waiters when its store commits a write (from any thread).

    A waiter takes a :meth:`ticket` *before* it reads what it waits on, then waits on that
    ticket: a commit that lands while it reads has set the ticket already, so the wait
    returns at once instead of sleeping through the change (a lost wake-up)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._event = loop, asyncio.Event()

    def committed(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = asyncio.Event()  # the next waiters wait for the next commit

    def ticket(self) -> asyncio.Event | None:
        """The event the next commit sets (None before the loop is attached); call it on
        the event loop, before reading the state to wait on."""
        return self._event

    async def wait(self, timeout: float, ticket: asyncio.Event | None = None) -> None:
        """Until a commit after ``ticket`` was taken (default: from now), or ``timeout``."""
        event = self._event if ticket is None else ticket
        if event is None:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
