"""Negacyclic NTT over Z_q[X]/(X^N + 1), bit-exact with SEAL's.

SEAL uses the smallest primitive 2N-th root of unity ψ and stores its powers in
bit-reversed order; the forward transform is the Cooley–Tukey butterfly sweep with
no explicit reordering, so coefficient i of the output is the evaluation at
ψ^(2·bitrev(i)+1). The inverse is the matching Gentleman–Sande sweep times N^-1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from he_agg.modarith import (
    ShoupConstant,
    U64Array,
    add_mod,
    mul_mod_shoup,
    shoup,
    sub_mod,
)

__all__ = [
    "COMPILED",
    "NttTables",
    "forward",
    "forward_reference",
    "inverse",
    "inverse_reference",
    "minimal_primitive_root",
    "ntt_tables",
]


def _bit_reverse(i: int, bits: int) -> int:
    return int(format(i, f"0{bits}b")[::-1], 2) if bits else 0


def minimal_primitive_root(order: int, q: int) -> int:
    """The smallest primitive ``order``-th root of unity mod q (order a power of two)."""
    if (q - 1) % order:
        raise ValueError(f"{q} is not ≡ 1 mod {order}")
    for x in range(2, q):
        root = pow(x, (q - 1) // order, q)
        if pow(root, order // 2, q) == q - 1:
            break
    else:  # pragma: no cover - q prime always has a generator
        raise ValueError("no primitive root found")
    # Every primitive root is root^k for odd k; walk them and keep the smallest.
    square = root * root % q
    best = current = root
    for _ in range(order // 2 - 1):
        current = current * square % q
        best = min(best, current)
    return best


@dataclass(frozen=True)
class NttTables:
    q: int
    n: int
    forward_stages: tuple[ShoupConstant, ...]
    inverse_stages: tuple[ShoupConstant, ...]
    n_inverse: ShoupConstant


@cache
def ntt_tables(q: int, n: int) -> NttTables:
    log_n = n.bit_length() - 1
    if 1 << log_n != n:
        raise ValueError("N must be a power of two")
    psi = minimal_primitive_root(2 * n, q)
    psi_inv = pow(psi, -1, q)
    rev = [_bit_reverse(i, log_n) for i in range(n)]
    powers = [pow(psi, r, q) for r in rev]
    inv_powers = [pow(psi_inv, r, q) for r in rev]
    forward_stages = []
    inverse_stages = []
    m = 1
    while m < n:
        forward_stages.append(shoup(np.array(powers[m : 2 * m]).reshape(m, 1), q))
        inverse_stages.append(shoup(np.array(inv_powers[m : 2 * m]).reshape(m, 1), q))
        m *= 2
    return NttTables(
        q=q,
        n=n,
        forward_stages=tuple(forward_stages),
        inverse_stages=tuple(reversed(inverse_stages)),
        n_inverse=shoup(np.array(pow(n, -1, q)), q),
    )


_CHUNK_WORDS = 1 << 16  # 512 KiB of words per pass keeps a butterfly sweep in cache


def _chunked(transform: Callable[[U64Array, int], U64Array]) -> Callable[[U64Array, int], U64Array]:
    """Run a transform over batches of polynomials small enough to stay in cache."""

    def run(values: U64Array, q: int) -> U64Array:
        n = values.shape[-1]
        rows = values.reshape(-1, n)
        step = max(1, _CHUNK_WORDS // n)
        if rows.shape[0] <= step:
            return transform(values, q)
        out = np.empty(rows.shape, dtype=np.uint64)
        for start in range(0, rows.shape[0], step):
            out[start : start + step] = transform(rows[start : start + step], q)
        return out.reshape(values.shape)

    run.__doc__ = transform.__doc__
    return run


@_chunked
def forward_reference(coeffs: U64Array, q: int) -> U64Array:
    """NTT of polynomials along the last axis (entries must be in [0, q)): numpy, the
    reference the compiled path (:mod:`he_agg.ntt_compiled`) is tested against."""
    n = coeffs.shape[-1]
    tables = ntt_tables(q, n)
    lead = coeffs.shape[:-1]
    a = np.array(coeffs, dtype=np.uint64, copy=True)
    m = 1
    for roots in tables.forward_stages:
        t = n // (2 * m)
        v = a.reshape(*lead, m, 2, t)
        x = v[..., 0, :]
        y = mul_mod_shoup(v[..., 1, :], roots, q)
        v[..., 1, :] = sub_mod(x, y, q)
        v[..., 0, :] = add_mod(x, y, q)
        m *= 2
    return a


@_chunked
def inverse_reference(values: U64Array, q: int) -> U64Array:
    """Inverse NTT along the last axis (numpy, the reference)."""
    n = values.shape[-1]
    tables = ntt_tables(q, n)
    lead = values.shape[:-1]
    a = np.array(values, dtype=np.uint64, copy=True)
    m = n // 2
    for roots in tables.inverse_stages:
        t = n // (2 * m)
        v = a.reshape(*lead, m, 2, t)
        x = v[..., 0, :]
        y = v[..., 1, :]
        difference = sub_mod(x, y, q)
        v[..., 0, :] = add_mod(x, y, q)
        v[..., 1, :] = mul_mod_shoup(difference, roots, q)
        m //= 2
    return mul_mod_shoup(a, tables.n_inverse, q)


def _compiled() -> bool:
    """numba's kernels, unless HE_AGG_NTT=numpy asks for the reference or numba is absent."""
    if os.environ.get("HE_AGG_NTT", "").lower() == "numpy":
        return False
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    return True


COMPILED = _compiled()


def forward(coeffs: U64Array, q: int) -> U64Array:
    """NTT of polynomials along the last axis (entries must be in [0, q))."""
    if COMPILED:
        from he_agg import ntt_compiled

        return ntt_compiled.forward(coeffs, q)
    return forward_reference(coeffs, q)


def inverse(values: U64Array, q: int) -> U64Array:
    """Inverse NTT along the last axis."""
    if COMPILED:
        from he_agg import ntt_compiled

        return ntt_compiled.inverse(values, q)
    return inverse_reference(values, q)
