"""SEAL's serialization, read and written with numpy; the only module that knows SEAL's bytes.

Layout (SEAL 4.x, learned by probing; DESIGN §5):

* header, 16 bytes: magic 0xA15E (u16), header size (u8, 16), version major (u8),
  version minor (u8), compression mode (u8: 0 none, 1 zlib, 2 zstd), reserved (u16),
  total size including the header (u64);
* Ciphertext / PublicKey body: parms_id (4×u64), is_ntt_form (u8), size (u64), N (u64),
  L (u64), scale (f64), correction factor (u64), then a DynArray;
* Plaintext / SecretKey body: parms_id (4×u64), coeff_count (u64), scale (f64), DynArray;
* DynArray: its own uncompressed header, a u64 count, then the u64 words
  ([poly][prime][coeff] for ciphertexts).

SEAL refuses headers of another version, so the version is read from the installed
library at run time.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
import zstandard

from he_agg.errors import SealFormatError
from he_agg.modarith import U64Array

__all__ = [
    "ParmsId",
    "SealCiphertext",
    "SealPlaintext",
    "ciphertext_from_bytes",
    "ciphertext_to_bytes",
    "plaintext_from_bytes",
    "plaintext_to_bytes",
    "seal_version",
]

ParmsId = tuple[int, int, int, int]

_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")
_CT_META = struct.Struct("<4QBQQQdQ")
_PT_META = struct.Struct("<4QQd")
_COMPRESSION_NONE, _COMPRESSION_ZLIB, _COMPRESSION_ZSTD = 0, 1, 2
_MAX_BODY = 1 << 31


@cache
def seal_version() -> tuple[int, int]:
    """(major, minor) of the SEAL library that tenseal ships, read from a real save()."""
    import os
    import tempfile

    import tenseal.sealapi as sealapi

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "probe")
        sealapi.Plaintext().save(path)
        with open(path, "rb") as handle:
            head = handle.read(_HEADER.size)
    _, _, major, minor, _, _, _ = _HEADER.unpack(head)
    return major, minor


@dataclass(frozen=True)
class SealCiphertext:
    """A SEAL Ciphertext (or PublicKey): words of shape (size, L, N)."""

    parms_id: ParmsId
    is_ntt_form: bool
    data: U64Array
    scale: float
    correction_factor: int = 1


@dataclass(frozen=True)
class SealPlaintext:
    """A SEAL Plaintext (or SecretKey): in NTT form its words are (L, N) flattened."""

    parms_id: ParmsId
    data: U64Array
    scale: float


def _header(body_size: int) -> bytes:
    major, minor = seal_version()
    return _HEADER.pack(_MAGIC, _HEADER.size, major, minor, 0, 0, _HEADER.size + body_size)


def _dyn_array(words: U64Array) -> bytes:
    flat = np.ascontiguousarray(words, dtype="<u8").reshape(-1)
    payload = struct.pack("<Q", flat.size) + flat.tobytes()
    return _header(len(payload)) + payload


def _open(blob: bytes) -> bytes:
    """Check the outer header and return the (decompressed) body."""
    if len(blob) < _HEADER.size:
        raise SealFormatError("shorter than a SEAL header")
    magic, header_size, major, minor, mode, _, total = _HEADER.unpack_from(blob)
    if magic != _MAGIC or header_size != _HEADER.size:
        raise SealFormatError("not a SEAL object (bad magic or header size)")
    if (major, minor) != seal_version():
        raise SealFormatError(f"SEAL version {major}.{minor}, expected {seal_version()}")
    if total != len(blob):
        raise SealFormatError(f"header says {total} bytes, got {len(blob)}")
    raw = blob[_HEADER.size :]
    try:
        if mode == _COMPRESSION_NONE:
            return raw
        if mode == _COMPRESSION_ZSTD:
            return zstandard.ZstdDecompressor().decompress(raw, max_output_size=_MAX_BODY)
        if mode == _COMPRESSION_ZLIB:
            return zlib.decompress(raw)
    except (zstandard.ZstdError, zlib.error) as exc:
        raise SealFormatError(f"cannot decompress body: {exc}") from exc
    raise SealFormatError(f"unknown compression mode {mode}")


def _read_dyn_array(body: bytes, offset: int, expected: int) -> U64Array:
    inner = body[offset:]
    if len(inner) < _HEADER.size + 8:
        raise SealFormatError("truncated DynArray")
    magic, header_size, _, _, mode, _, total = _HEADER.unpack_from(inner)
    if magic != _MAGIC or header_size != _HEADER.size or mode != _COMPRESSION_NONE:
        raise SealFormatError("bad DynArray header")
    (count,) = struct.unpack_from("<Q", inner, _HEADER.size)
    if count != expected or total != _HEADER.size + 8 + 8 * count or len(inner) != total:
        raise SealFormatError(f"DynArray holds {count} words, expected {expected}")
    return np.frombuffer(inner, dtype="<u8", count=count, offset=_HEADER.size + 8).astype(
        np.uint64, copy=False
    )


def ciphertext_to_bytes(ct: SealCiphertext) -> bytes:
    """Uncompressed SEAL bytes for a Ciphertext or PublicKey."""
    size, levels, n = ct.data.shape
    meta = _CT_META.pack(
        *ct.parms_id, int(ct.is_ntt_form), size, n, levels, ct.scale, ct.correction_factor
    )
    body = meta + _dyn_array(ct.data)
    return _header(len(body)) + body


def ciphertext_from_bytes(blob: bytes) -> SealCiphertext:
    body = _open(blob)
    if len(body) < _CT_META.size:
        raise SealFormatError("truncated ciphertext metadata")
    *pid, ntt, size, n, levels, scale, correction = _CT_META.unpack_from(body)
    if not (1 <= size <= 16 and 1 <= levels <= 64 and 0 < n <= 1 << 17):
        raise SealFormatError(f"implausible ciphertext shape ({size}, {levels}, {n})")
    words = _read_dyn_array(body, _CT_META.size, size * levels * n)
    return SealCiphertext(
        parms_id=(pid[0], pid[1], pid[2], pid[3]),
        is_ntt_form=bool(ntt),
        data=words.reshape(size, levels, n),
        scale=scale,
        correction_factor=correction,
    )


def plaintext_to_bytes(pt: SealPlaintext) -> bytes:
    """Uncompressed SEAL bytes for a Plaintext or SecretKey."""
    flat = pt.data.reshape(-1)
    body = _PT_META.pack(*pt.parms_id, flat.size, pt.scale) + _dyn_array(flat)
    return _header(len(body)) + body


def plaintext_from_bytes(blob: bytes) -> SealPlaintext:
    body = _open(blob)
    if len(body) < _PT_META.size:
        raise SealFormatError("truncated plaintext metadata")
    *pid, count, scale = _PT_META.unpack_from(body)
    if count > 1 << 24:
        raise SealFormatError(f"implausible coefficient count {count}")
    words = _read_dyn_array(body, _PT_META.size, count)
    return SealPlaintext(parms_id=(pid[0], pid[1], pid[2], pid[3]), data=words, scale=scale)
