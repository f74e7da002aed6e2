"""Adding uploads: element-wise sums mod each data prime, with lazy reduction.

Words are below q < 2^61, so a uint64 accumulator can take ⌊(2^64−1)/(q−1)⌋ of them
before it must be reduced; we reduce only then, and once at the end.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from he_agg.envelope import AGGREGATE_CLIENT, Upload, decode_upload, encode_upload
from he_agg.errors import MismatchError
from he_agg.modarith import U64Array
from he_agg.params import ParameterSet

__all__ = [
    "RunningSum",
    "aggregate_envelope",
    "aggregate_uploads",
    "envelope_of_sum",
    "sum_uploads",
]


class RunningSum:
    """Σ of (C, 2, L, N) ciphertext words mod the data primes."""

    def __init__(self, params: ParameterSet, count: int) -> None:
        self.params = params
        self.count = count
        shape = (count, 2, len(params.data_primes), params.poly_degree)
        self._total = np.zeros(shape, dtype=np.uint64)
        self._primes = np.array(params.data_primes, dtype=np.uint64).reshape(1, 1, -1, 1)
        self._budget = (2**64 - 1) // (max(params.data_primes) - 1) - 1
        self._pending = 0
        self.added = 0

    def add(self, words: U64Array) -> None:
        if words.shape != self._total.shape:
            raise MismatchError(f"upload has shape {words.shape}, the round {self._total.shape}")
        self.add_windows([(0, words)])

    def add_windows(self, windows: Iterable[tuple[int, U64Array]]) -> None:
        """Add one upload given as (first ciphertext, words) windows that cover it once
        each: only a window's worth of the upload is in memory at a time."""
        if self._pending + 1 > self._budget:
            self._reduce()
        for first, words in windows:
            part = self._total[first : first + words.shape[0]]
            if words.shape[1:] != self._total.shape[1:] or part.shape != words.shape:
                raise MismatchError(
                    f"window of shape {words.shape} at {first} does not fit {self._total.shape}"
                )
            np.add(part, words, out=part)
        self._pending += 1
        self.added += 1

    def _reduce(self) -> None:
        np.remainder(self._total, self._primes, out=self._total)
        self._pending = 1

    def result(self) -> U64Array:
        self._reduce()
        return self._total.copy()


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


def aggregate_uploads(blobs: Iterable[bytes], params: ParameterSet, **expect: object) -> U64Array:
    """Validate every envelope and return the sum of their ciphertexts."""
    return sum_uploads((decode_upload(b, params, **expect) for b in blobs), params)  # type: ignore[arg-type]
