"""Adding uploads: element-wise sums mod each data prime, with lazy reduction.

Words are below q < 2^61, so a uint64 accumulator can take ⌊(2^64−1)/(q−1)⌋ of them
before it must be reduced; we reduce only then, and once at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Unpack

import numpy as np

from he_agg.envelope import (
    AGGREGATE_CLIENT,
    EnvelopeView,
    Expected,
    Upload,
    encode_upload,
)
from he_agg.errors import MismatchError
from he_agg.modarith import U64Array
from he_agg.packed_sum import add_packed
from he_agg.params import ParameterSet

__all__ = [
    "ADD_WINDOW",
    "RunningSum",
    "aggregate_envelope",
    "aggregate_uploads",
    "envelope_of_sum",
    "sum_uploads",
]


ADD_WINDOW = 32  # ciphertexts read, checked and added at a time from an envelope in memory


class RunningSum:
    """Σ of (C, 2, L, N) ciphertext words mod the data primes.

    Kept prime-major, (L, C, 2, N), so each prime's sum is one contiguous block that the
    compiled kernel (:func:`add_envelope`) adds packed wire bytes into."""

    def __init__(self, params: ParameterSet, count: int) -> None:
        self.params = params
        self.count = count
        levels, n = len(params.data_primes), params.poly_degree
        self._total = np.zeros((levels, count, 2, n), dtype=np.uint64)
        self._primes = np.array(params.data_primes, dtype=np.uint64).reshape(-1, 1, 1, 1)
        self._budget = (2**64 - 1) // (max(params.data_primes) - 1) - 1
        self._pending = 0
        self.added = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        levels, count, polys, n = self._total.shape
        return count, polys, levels, n

    def add(self, words: U64Array) -> None:
        if words.shape != self.shape:
            raise MismatchError(f"upload has shape {words.shape}, the round {self.shape}")
        self.add_windows([(0, words)])

    def _make_room(self) -> None:
        if self._pending + 1 > self._budget:
            self._reduce()

    def add_windows(self, windows: Iterable[tuple[int, U64Array]]) -> None:
        """Add one upload given as (first ciphertext, words) windows that cover it once
        each: only a window's worth of the upload is in memory at a time."""
        self._make_room()
        for first, words in windows:
            part = self._total[:, first : first + words.shape[0]]
            if words.shape[1:] != self.shape[1:] or part.shape[1] != words.shape[0]:
                raise MismatchError(
                    f"window of shape {words.shape} at {first} does not fit {self.shape}"
                )
            np.add(part, words.transpose(2, 0, 1, 3), out=part)
        self._pending += 1
        self.added += 1

    def add_envelope(self, view: EnvelopeView, window: int) -> None:
        """Add an upload from its packed wire bytes, ``window`` ciphertexts at a time,
        each word range-checked and added in one compiled pass (:mod:`he_agg.packed_sum`).
        On a WordRangeError the sum is left partly added: the caller must discard it."""
        if view.count != self.count or view.params.fingerprint != self.params.fingerprint:
            raise MismatchError(f"upload has {view.count} ciphertexts, the round {self.count}")
        self._make_room()
        n, primes = self.params.poly_degree, self.params.data_primes
        for first in range(0, self.count, window):
            size = min(window, self.count - first)
            for j, region in view.regions(first, size):
                rows = self._total[j, first : first + size].reshape(2 * size, n)
                add_packed(rows, region, primes[j].bit_length(), primes[j])
        self._pending += 1
        self.added += 1

    def _reduce(self) -> None:
        np.remainder(self._total, self._primes, out=self._total)
        self._pending = 1

    def result(self) -> U64Array:
        """The sum, words (C, 2, L, N) each reduced below its prime."""
        self._reduce()
        return np.ascontiguousarray(self._total.transpose(1, 2, 0, 3))


def sum_uploads(uploads: Iterable[Upload], params: ParameterSet) -> U64Array:
    """Σ of already-validated uploads' ciphertexts."""
    running: RunningSum | None = None
    for upload in uploads:
        running = running or RunningSum(params, upload.count)
        running.add(upload.words)
    if running is None:
        raise MismatchError("nothing to aggregate")
    return running.result()


def aggregate_envelope(
    uploads: Iterable[Upload], params: ParameterSet, federation: str, round: int, epoch: int = 0
) -> bytes:
    """The round's aggregate as an envelope. The server publishes its sha256 and every
    member recomputes it, so both must build it with this one function."""
    return envelope_of_sum(sum_uploads(uploads, params), params, federation, round, epoch)


def envelope_of_sum(
    total: U64Array, params: ParameterSet, federation: str, round: int, epoch: int = 0
) -> bytes:
    """The envelope of a round's summed words (however they were summed)."""
    aggregate = Upload(federation, round, AGGREGATE_CLIENT, params.scale, total, epoch)
    return encode_upload(aggregate, params)


def aggregate_uploads(
    blobs: Iterable[bytes], params: ParameterSet, **expect: Unpack[Expected]
) -> U64Array:
    """Validate every envelope and return the sum of their ciphertexts, added from their
    wire bytes (the compiled path; :func:`sum_uploads` of decoded uploads is the reference)."""
    running: RunningSum | None = None
    for blob in blobs:
        view = EnvelopeView.parse(blob, params, **expect)
        running = running or RunningSum(params, view.count)
        running.add_envelope(view, view.count)
    if running is None:
        raise MismatchError("nothing to aggregate")
    return running.result()
