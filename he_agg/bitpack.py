"""Bit-packing of RNS words to a fixed width, little-endian, 64 words at a time.

64 words of w bits fill exactly w 64-bit words, so word j of every group lands at the
same bit offset j·w; one vectorised shift-and-or per position packs a whole array.
The stream is the words' bits in order, least significant first, as a non-Python
reader would expect.
"""

from __future__ import annotations

import numpy as np

from he_agg.errors import SizeError, WordRangeError
from he_agg.modarith import U64Array

__all__ = ["pack", "pack_residues", "packed_size", "unpack", "unpack_residues"]

_GROUP = 64


def packed_size(count: int, width: int) -> int:
    """Bytes for ``count`` words of ``width`` bits (count a multiple of 64)."""
    return count * width // 8


def pack(words: U64Array, width: int) -> bytes:
    flat = np.ascontiguousarray(words, dtype=np.uint64).reshape(-1)
    if flat.size % _GROUP or not 1 <= width <= 64:
        raise ValueError("pack needs a multiple of 64 words and a width of 1..64")
    if width == 64:
        return flat.astype("<u8").tobytes()
    columns = np.ascontiguousarray(flat.reshape(-1, _GROUP).T)  # row j: word j of each group
    out = np.zeros((width, columns.shape[1]), dtype=np.uint64)
    for j in range(_GROUP):
        index, shift = divmod(j * width, 64)
        out[index] |= columns[j] << np.uint64(shift)
        if shift + width > 64:
            out[index + 1] |= columns[j] >> np.uint64(64 - shift)
    return np.ascontiguousarray(out.T).astype("<u8", copy=False).tobytes()


def unpack(data: bytes | memoryview, width: int, count: int) -> U64Array:
    """Inverse of :func:`pack`; ``data`` must be exactly ``packed_size(count, width)`` bytes."""
    if count % _GROUP or len(data) != packed_size(count, width):
        raise ValueError("packed data has the wrong size")
    stream = np.frombuffer(data, dtype="<u8").astype(np.uint64, copy=False)
    if width == 64:
        return stream.copy()
    packed = np.ascontiguousarray(stream.reshape(-1, width).T)  # row i: packed word i
    mask = np.uint64((1 << width) - 1)
    out = np.empty((_GROUP, packed.shape[1]), dtype=np.uint64)
    for j in range(_GROUP):
        index, shift = divmod(j * width, 64)
        column = packed[index] >> np.uint64(shift)
        if shift + width > 64:
            column |= packed[index + 1] << np.uint64(64 - shift)
        np.bitwise_and(column, mask, out=out[j])
    return np.ascontiguousarray(out.T).reshape(-1)


def pack_residues(words: U64Array, primes: tuple[int, ...]) -> bytes:
    """Words (..., L, N) → bytes, each prime's residues bit-packed to its width, prime-major."""
    return b"".join(pack(words[..., j, :], q.bit_length()) for j, q in enumerate(primes))


def unpack_residues(
    data: bytes | memoryview, primes: tuple[int, ...], lead: tuple[int, ...], n: int
) -> U64Array:
    count = int(np.prod(lead, dtype=np.int64)) * n
    sizes = [packed_size(count, q.bit_length()) for q in primes]
    if len(data) != sum(sizes):
        raise SizeError(f"residues are {len(data)} bytes, expected {sum(sizes)}")
    out = np.empty((*lead, len(primes), n), dtype=np.uint64)
    position = 0
    for j, (q, size) in enumerate(zip(primes, sizes, strict=True)):
        residues = unpack(data[position : position + size], q.bit_length(), count)
        if residues.max(initial=0) >= np.uint64(q):
            raise WordRangeError(f"a word is not below prime {j}")
        out[..., j, :] = residues.reshape(*lead, n)
        position += size
    return out
