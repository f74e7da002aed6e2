"""Adding uploads on a torch device, straight from their wire bytes (he_agg.envelope).

The same sum as :class:`he_agg.aggregate.RunningSum`, Σ_k c_k mod q_j word by word, with
lazy reduction: words are below q < 2^61, so an int64 accumulator that starts reduced
(≤ q−1) holds ⌊(2^63−1)/(q−1)⌋ words' worth before it must be reduced mod q.

Each upload's body (every prime's C·2·N words, bit-packed to the prime's width w by
:mod:`he_agg.bitpack`: 64 words fill w 64-bit little-endian words, word j of a group at
bit offset j·w) goes to the device in one copy and is unpacked there: word j is
(stream[⌊jw/64⌋] >> jw mod 64) | (stream[⌊jw/64⌋+1] << (64 − jw mod 64)), masked to w bits
(int64 shifts are arithmetic, so the right shift is masked too). Every word is checked
below its prime before any is added, so a refused upload leaves the sum as it was.
The header is parsed and checked on the host (:meth:`EnvelopeView.parse`); a
little-endian host is assumed, as torch reads the bytes in native order.
"""

from __future__ import annotations

from typing import Unpack

import numpy as np
import torch

from he_agg.bitpack import packed_size
from he_agg.envelope import ByteSource, EnvelopeView, Expected
from he_agg.errors import MismatchError, WordRangeError
from he_agg.modarith import U64Array
from he_agg.params import ParameterSet

__all__ = ["DeviceRunningSum", "unpack_device"]

_GROUP = 64
Tensor = torch.Tensor


def _as_int64(value: int) -> int:
    """A 64-bit pattern as the int64 that holds it."""
    return value - (1 << 64) if value >= 1 << 63 else value


def unpack_device(stream: Tensor, width: int, count: int) -> Tensor:
    """:func:`he_agg.bitpack.unpack` on the device: int64 ``stream`` (count·width/64 packed
    words) → ``count`` int64 words of ``width`` < 64 bits."""
    if count % _GROUP or stream.numel() * _GROUP != count * width or not 1 <= width < 64:
        raise ValueError("packed stream has the wrong size")
    groups = stream.reshape(-1, width)  # row g: the w packed words of group g
    device = stream.device
    offsets = [j * width for j in range(_GROUP)]
    index = torch.tensor([o // 64 for o in offsets], device=device)
    shift = torch.tensor([o % 64 for o in offsets], dtype=torch.int64, device=device)
    low_mask = torch.tensor(
        [_as_int64((1 << (64 - o % 64)) - 1) for o in offsets], dtype=torch.int64, device=device
    )
    spills = [o % 64 + width > 64 for o in offsets]
    spill = torch.tensor(spills, device=device)
    next_index = torch.tensor(
        [o // 64 + 1 if s else o // 64 for o, s in zip(offsets, spills, strict=True)],
        device=device,
    )
    high_shift = torch.where(spill, 64 - shift, torch.zeros_like(shift))
    low = (groups[:, index] >> shift) & low_mask
    high = torch.where(spill, groups[:, next_index] << high_shift, torch.zeros_like(low))
    return ((low | high) & ((1 << width) - 1)).reshape(-1)


class DeviceRunningSum:
    """Σ of (C, 2, L, N) ciphertext words mod the data primes, accumulated on ``device``."""

    def __init__(self, params: ParameterSet, count: int, device: str | torch.device) -> None:
        self.params = params
        self.count = count
        self.device = torch.device(device)
        primes, n = params.data_primes, params.poly_degree
        self._total = torch.zeros((count, 2, len(primes), n), dtype=torch.int64, device=device)
        self._moduli = torch.tensor(primes, dtype=torch.int64, device=device).reshape(-1, 1)
        self._budget = (2**63 - 1) // (max(primes) - 1) - 1
        self._pending = 0
        self.added = 0

    def add_envelope(self, data: ByteSource, **expect: Unpack[Expected]) -> None:
        """Validate an envelope's header (host), copy its body to the device once, unpack
        and range-check every word there, and add it (all or nothing)."""
        view = EnvelopeView.parse(data, self.params, **expect)
        if view.count != self.count:
            raise MismatchError(f"upload has {view.count} ciphertexts, the round {self.count}")
        n, primes = self.params.poly_degree, self.params.data_primes
        words = self.count * 2 * n
        sizes = [packed_size(words, q.bit_length()) for q in primes]
        start = view.header_length
        body = bytearray(view.blob[start : start + sum(sizes)])  # writable, 8-byte aligned
        stream = torch.frombuffer(body, dtype=torch.int64).to(self.device)
        parts, position = [], 0
        for q, size in zip(primes, sizes, strict=True):
            part = stream[position // 8 : (position + size) // 8]
            parts.append(unpack_device(part, q.bit_length(), words).reshape(self.count, 2, n))
            position += size
        upload = torch.stack(parts, dim=2)  # (C, 2, L, N)
        if bool((upload >= self._moduli).any()):
            raise WordRangeError("a word is not below its prime")
        self._add(upload)

    def add_words(self, words: U64Array) -> None:
        """Add words (C, 2, L, N) already on the host and already range-checked."""
        if words.shape != tuple(self._total.shape):
            raise MismatchError(f"upload has shape {words.shape}, the round {self._total.shape}")
        host = np.ascontiguousarray(words, dtype=np.uint64).view(np.int64)
        self._add(torch.from_numpy(host).to(self.device))

    def _add(self, upload: Tensor) -> None:
        if self._pending + 1 > self._budget:
            self._reduce()
        self._total += upload
        self._pending += 1
        self.added += 1

    def _reduce(self) -> None:
        torch.remainder(self._total, self._moduli, out=self._total)
        self._pending = 1

    def result(self) -> U64Array:
        """The sum, words (C, 2, L, N) each reduced below its prime (one device→host copy)."""
        self._reduce()
        host: U64Array = self._total.cpu().numpy().view(np.uint64).copy()
        return host
