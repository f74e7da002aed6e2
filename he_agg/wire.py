"""Small binary helpers shared by the committee's message types."""

from __future__ import annotations

import struct

from he_agg.errors import SizeError

__all__ = ["Reader", "blob"]


class Reader:
    """Sequential reads from a message, with size errors instead of struct errors."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.position + size > len(self.data):
            raise SizeError("message is truncated")
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        layout = struct.Struct(fmt)
        return layout.unpack(self.take(layout.size))

    def blob(self) -> bytes:
        (size,) = self.unpack("<I")
        return self.take(size)

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.position)

    def finish(self) -> None:
        if self.position != len(self.data):
            raise SizeError("message has trailing bytes")


def blob(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data
