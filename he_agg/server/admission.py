"""Admission of uploads: a cap on the bytes and the number of uploads in flight at once.

An upload reserves its declared length (or, without one, the federation's largest upload)
before a byte of its body is read; past either cap it gets 503 with ``Retry-After`` and
the server holds nothing for it. The reservation is released when the request ends,
however it ends. Counters are per process (each replica admits its own load).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from he_agg.errors import ServiceError

__all__ = ["Admission"]


class Admission:
    def __init__(
        self, max_bytes: int, max_uploads: int, retry_after: float, receive_slots: int = 8
    ) -> None:
        self.max_bytes = max_bytes
        self.max_uploads = max_uploads
        self.retry_after = retry_after
        # admitted uploads take turns to read a chunk, ``receive_slots`` at a time: the rest
        # stay paused (uvicorn stops reading a connection whose buffered body is unread), so
        # one turn of the event loop reads a few sockets, not every admitted one, and short
        # requests (/health) wait milliseconds, not a hundred sockets' reads
        self.receiving = asyncio.Semaphore(receive_slots)
        self.bytes = 0
        self.uploads = 0
        self._lock = threading.Lock()

    @contextmanager
    def admit(self, size: int) -> Iterator[None]:
        """Reserve ``size`` bytes for one upload, or raise 503 (Retry-After) at once."""
        with self._lock:
            busy = self.uploads + 1 > self.max_uploads or self.bytes + size > self.max_bytes
            if busy and self.uploads > 0:  # one upload always fits, however large
                raise ServiceError(
                    503,
                    f"busy: {self.uploads} uploads ({self.bytes} bytes) in flight; "
                    f"retry after {self.retry_after:g} s",
                    retry_after=self.retry_after,
                )
            self.bytes += size
            self.uploads += 1
        try:
            yield
        finally:
            with self._lock:
                self.bytes -= size
                self.uploads -= 1
