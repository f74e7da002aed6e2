"""The upload envelope: our own versioned wire format for a client's encrypted update.

All integers little-endian. A reader in any language needs only this table.

    offset  size  field
    0       4     magic  b"HEAG"
    4       2     format version (3)
    6       2     header length H in bytes (everything before the body)
    8       32    parameter-set fingerprint (sha256 of its canonical encoding)
    40      8     key epoch (the collective key it is encrypted under)
    48      8     round number
    56      4     ciphertext count C
    60      8     scale Δ (IEEE-754 double)
    68      1     federation id length F, then F bytes of UTF-8
    69+F    1     client id length K, then K bytes of UTF-8
    H       ...   body: for each data prime q_j in order, the C·2·N words of every
                  ciphertext's (c0, c1) residues mod q_j, ciphertext-major, each word
                  bit-packed to q_j's bit length (see bitpack.py)
    ...   ...   proofs (format 3, a parameter set with ``proofs``, a client's upload only):
                  one he_agg.wellformed proof per group of ≤ PROOF_GROUP ciphertexts,
                  in order, each of the fixed size ``wellformed.proof_size`` gives

The body length is fixed by (C, N, the primes, whether proofs are carried); anything
shorter or longer is refused, and so is any word ≥ its prime.

Version 2 added the key epoch, so a client's request signature (over the body's sha256)
binds its upload to one epoch as well as to the federation, round and client. A version-1
envelope (before key epochs) is refused with a message that says so. Version 3 added the
proofs; a version-2 envelope (no proofs section) is still read for a parameter set
without proofs, and refused with a message that says so for one with them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypedDict, Unpack

import numpy as np

from he_agg import wellformed
from he_agg.bitpack import pack_residues, packed_size
from he_agg.errors import (
    FingerprintError,
    MagicError,
    MismatchError,
    SizeError,
    VersionError,
    WordRangeError,
)
from he_agg.modarith import U64Array
from he_agg.packed_sum import check_packed, unpack_packed
from he_agg.params import ParameterSet

__all__ = [
    "AGGREGATE_CLIENT",
    "FORMAT_VERSION",
    "MAGIC",
    "ByteSource",
    "EnvelopeView",
    "Expected",
    "Upload",
    "decode_upload",
    "encode_upload",
    "expected_size",
]

MAGIC = b"HEAG"
AGGREGATE_CLIENT = "_aggregate"  # the client id of a round's aggregate; no party can have it
FORMAT_VERSION = 3
_FIXED = struct.Struct("<4sHH32sQQId")
_MAX_ID = 255


@dataclass(frozen=True)
class Upload:
    """One client's encrypted update: words of shape (C, 2, L, N) in NTT form."""

    federation: str
    round: int
    client: str
    scale: float
    words: U64Array
    epoch: int = 0
    proofs: tuple[bytes, ...] = ()  # he_agg.wellformed proofs, one per group (proven sets)

    @property
    def count(self) -> int:
        return int(self.words.shape[0])


def _ident(value: str, what: str) -> bytes:
    raw = value.encode()
    if not 1 <= len(raw) <= _MAX_ID:
        raise MismatchError(f"{what} id must be 1..{_MAX_ID} bytes of UTF-8")
    return bytes([len(raw)]) + raw


def _body_size(params: ParameterSet, count: int) -> int:
    words = count * 2 * params.poly_degree
    return sum(packed_size(words, bits) for bits in params.prime_bits)


def _carries_proofs(params: ParameterSet, client: str) -> bool:
    return params.proofs and client != AGGREGATE_CLIENT


def expected_size(params: ParameterSet, count: int, federation: str, client: str) -> int:
    header = _FIXED.size + 2 + len(federation.encode()) + len(client.encode())
    proofs = wellformed.proofs_size(params, count) if _carries_proofs(params, client) else 0
    return header + _body_size(params, count) + proofs


def encode_upload(upload: Upload, params: ParameterSet) -> bytes:
    count, polys, levels, n = upload.words.shape
    if (polys, levels, n) != (2, len(params.data_primes), params.poly_degree):
        raise MismatchError(f"words have shape {upload.words.shape}, not (C, 2, L, N)")
    sizes = [size for _, size in wellformed.groups(count)]
    if _carries_proofs(params, upload.client):
        expected = [wellformed.proof_size(params, size) for size in sizes]
        if [len(p) for p in upload.proofs] != expected:
            raise MismatchError("this parameter set needs one proof of well-formedness per group")
    elif upload.proofs:
        raise MismatchError("this envelope carries no proofs")
    tail = _ident(upload.federation, "federation") + _ident(upload.client, "client")
    header_length = _FIXED.size + len(tail)
    fixed = _FIXED.pack(
        MAGIC,
        FORMAT_VERSION,
        header_length,
        params.fingerprint,
        upload.epoch,
        upload.round,
        count,
        upload.scale,
    )
    body = pack_residues(upload.words, params.data_primes)
    return b"".join([fixed, tail, body, *upload.proofs])


def _read_ident(blob: memoryview, offset: int, what: str) -> tuple[str, int]:
    if offset >= len(blob):
        raise SizeError(f"truncated before the {what} id")
    length = blob[offset]
    end = offset + 1 + length
    if length == 0 or end > len(blob):
        raise SizeError(f"bad {what} id length")
    try:
        return bytes(blob[offset + 1 : end]).decode(), end
    except UnicodeDecodeError as exc:
        raise MismatchError(f"{what} id is not UTF-8") from exc


class Expected(TypedDict, total=False):
    """What a reader expects an envelope to name; each one given must match exactly."""

    federation: str
    round: int
    client: str
    max_count: int  # the most ciphertexts it may hold
    epoch: int


class ByteSource(Protocol):
    """What an envelope can be read from: bytes, a memoryview, or a file read on demand
    (``he_agg.server.store.FileBytes``): a length, and slices as bytes-like objects."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> bytes | memoryview: ...


_MAX_HEADER = _FIXED.size + 2 * (1 + _MAX_ID)


@dataclass(frozen=True)
class EnvelopeView:
    """A validated envelope header over the bytes (a memoryview, say of an mmap), whose
    words are unpacked and range-checked a window of ciphertexts at a time: validating an
    upload never holds all of it as arrays. Each ciphertext's 2N words per prime start on a
    byte boundary (2N is a multiple of 64), so any window is read where it lies."""

    blob: ByteSource
    params: ParameterSet
    federation: str
    round: int
    client: str
    scale: float
    epoch: int
    count: int
    header_length: int

    @classmethod
    def parse(
        cls, data: ByteSource, params: ParameterSet, **expect: Unpack[Expected]
    ) -> EnvelopeView:
        """Check everything but the words: magic, version, parameter set, the expectations
        given (each must match exactly), the scale, and the exact length."""
        federation, round = expect.get("federation"), expect.get("round")
        client, epoch = expect.get("client"), expect.get("epoch")
        max_count = expect.get("max_count")
        if isinstance(data, bytes):  # windows are then read in place, not copied out
            data = memoryview(data)
        size = len(data)
        blob = memoryview(bytes(data[0:_MAX_HEADER]))  # the header, in full, is in here
        if len(blob) < _FIXED.size:
            raise SizeError("shorter than the envelope header")
        if bytes(blob[:4]) != MAGIC:
            raise MagicError("not a he-agg upload (bad magic)")
        (version,) = struct.unpack_from("<H", blob, 4)
        if version == 1:
            raise VersionError(
                "format version 1 predates key epochs; encrypt the update again with this he-agg"
            )
        if version == 2 and params.proofs:
            raise VersionError(
                "format version 2 carries no proofs of well-formed ciphertexts, which this "
                "parameter set requires; encrypt the update again with this he-agg"
            )
        if version not in (2, FORMAT_VERSION):
            raise VersionError(f"format version {version}, this server reads {FORMAT_VERSION}")
        _, _, header_length, fingerprint, key_epoch, round_no, count, scale = _FIXED.unpack_from(
            blob
        )
        if fingerprint != params.fingerprint:
            raise FingerprintError("upload was made for another parameter set")
        fed, offset = _read_ident(blob, _FIXED.size, "federation")
        who, offset = _read_ident(blob, offset, "client")
        if offset != header_length:
            raise SizeError("header length field disagrees with the header")
        checks = (
            ("federation", federation, fed),
            ("key epoch", epoch, key_epoch),
            ("round", round, round_no),
            ("client", client, who),
        )
        for what, expected, got in checks:
            if expected is not None and expected != got:
                raise MismatchError(f"{what} is {got!r}, expected {expected!r}")
        if scale != params.scale:
            raise MismatchError(
                f"scale {scale!r} differs from the parameter set's {params.scale!r}"
            )
        if count == 0 or (max_count is not None and count > max_count):
            raise MismatchError(f"ciphertext count {count} outside 1..{max_count}")
        body_size = _body_size(params, count)
        proofs = wellformed.proofs_size(params, count) if _carries_proofs(params, who) else 0
        if size - header_length != body_size + proofs:
            raise SizeError(f"body is {size - header_length} bytes, expected {body_size + proofs}")
        return cls(data, params, fed, round_no, who, scale, key_epoch, count, header_length)

    def words(self, first: int = 0, count: int | None = None) -> U64Array:
        """Ciphertexts ``first`` … ``first + count − 1`` as words (count, 2, L, N), each
        checked to be below its prime (WordRangeError otherwise)."""
        count = self.count - first if count is None else count
        if not (first >= 0 and count > 0 and first + count <= self.count):
            raise ValueError(f"window {first}+{count} outside 0..{self.count}")
        n, primes = self.params.poly_degree, self.params.data_primes
        out = np.empty((count, 2, len(primes), n), dtype=np.uint64)
        region = self.header_length
        for j, q in enumerate(primes):
            bits = q.bit_length()
            start = region + packed_size(first * 2 * n, bits)
            size = packed_size(count * 2 * n, bits)
            rows = out[:, :, j, :].reshape(count * 2, n)  # a strided view: written in place
            assert np.may_share_memory(rows, out)
            try:
                unpack_packed(rows, self.blob[start : start + size], bits, q)
            except WordRangeError:
                raise WordRangeError(f"a word is not below prime {j}") from None
            region += packed_size(self.count * 2 * n, bits)
        return out

    def regions(self, first: int, count: int) -> Iterator[tuple[int, bytes | memoryview]]:
        """(data prime index, packed bytes) of ciphertexts ``first`` … ``first + count − 1``:
        each prime's 2N residues per ciphertext, as they lie on the wire (unchecked)."""
        if not (first >= 0 and count > 0 and first + count <= self.count):
            raise ValueError(f"window {first}+{count} outside 0..{self.count}")
        n = self.params.poly_degree
        region = self.header_length
        for j, q in enumerate(self.params.data_primes):
            bits = q.bit_length()
            start = region + packed_size(first * 2 * n, bits)
            yield j, self.blob[start : start + packed_size(count * 2 * n, bits)]
            region += packed_size(self.count * 2 * n, bits)

    def check_words(self, size: int) -> None:
        """Range-check every word, ``size`` ciphertexts at a time, without unpacking them
        (the compiled kernel of :mod:`he_agg.packed_sum`); WordRangeError otherwise."""
        primes = self.params.data_primes
        for first in range(0, self.count, size):
            for j, region in self.regions(first, min(size, self.count - first)):
                check_packed(region, primes[j].bit_length(), primes[j])

    def windows(self, size: int) -> Iterator[tuple[int, U64Array]]:
        """(first, words) for consecutive windows of at most ``size`` ciphertexts."""
        for first in range(0, self.count, size):
            yield first, self.words(first, min(size, self.count - first))

    def proofs(self) -> tuple[bytes, ...]:
        """The proofs section, one proof per group (empty without proofs)."""
        if not _carries_proofs(self.params, self.client):
            return ()
        end = self.header_length + _body_size(self.params, self.count)
        carried = []
        for _, size in wellformed.groups(self.count):
            length = wellformed.proof_size(self.params, size)
            carried.append(bytes(self.blob[end : end + length]))
            end += length
        return tuple(carried)


def decode_upload(data: ByteSource, params: ParameterSet, **expect: Unpack[Expected]) -> Upload:
    """Parse and validate an envelope whole; every expectation given must match exactly."""
    view = EnvelopeView.parse(data, params, **expect)
    return Upload(
        federation=view.federation,
        round=view.round,
        client=view.client,
        scale=view.scale,
        words=view.words(),
        epoch=view.epoch,
        proofs=view.proofs(),
    )
