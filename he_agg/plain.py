"""The plaintext upload format, for baselines: the same server, FedAvg without encryption.

offset  size  field
0       4     magic b"HEPT"
4       2     format version (1)
6       2     reserved (0)
8       8     value count V
16      4·V   float32 values, little-endian: [n_k, n_k·x_k]
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from he_agg.errors import MagicError, PackingError, SizeError, VersionError

__all__ = ["decode_plain_upload", "encode_plain_upload", "plain_size"]

_HEAD = struct.Struct("<4sHHQ")
_MAGIC = b"HEPT"


def plain_size(count: int) -> int:
    return _HEAD.size + 4 * count


def encode_plain_upload(values: npt.NDArray[np.float64]) -> bytes:
    flat = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    return _HEAD.pack(_MAGIC, 1, 0, flat.size) + flat.tobytes()


def decode_plain_upload(data: bytes | memoryview) -> npt.NDArray[np.float32]:
    blob = memoryview(data)
    if len(blob) < _HEAD.size:
        raise SizeError("shorter than the plaintext header")
    magic, version, _, count = _HEAD.unpack_from(blob)
    if magic != _MAGIC:
        raise MagicError("not a plaintext upload (bad magic)")
    if version != 1:
        raise VersionError(f"plaintext format version {version}")
    if len(blob) != plain_size(count) or count == 0:
        raise SizeError(f"body holds {len(blob)} bytes, header promises {count} values")
    values = np.frombuffer(blob, dtype="<f4", count=count, offset=_HEAD.size)
    if not np.isfinite(values).all():
        raise PackingError("plaintext upload holds NaN or infinity")
    return values.copy()
