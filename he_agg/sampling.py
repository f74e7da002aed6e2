"""Secret and noise samplers, all fed by the OS CSPRNG.

Secrets (ternary keys, uniform masks) come straight from ``secrets``/``os.urandom``;
Gaussian noise comes from a numpy Generator seeded from the OS for each call, which
DESIGN §3 allows for noise only.
"""

from __future__ import annotations

import math
import os
import secrets

import numpy as np
import numpy.typing as npt

from he_agg.modarith import U64Array, add_mod, mul_mod_shoup, shoup

__all__ = [
    "KEY_SIGMA",
    "flooding_noise",
    "flooding_noise_rns",
    "gaussian",
    "ternary",
    "to_rns",
    "uniform_mod",
]

KEY_SIGMA = 3.19  # SEAL's noise standard deviation
KEY_NOISE_CLIP = 19  # ⌊6σ⌋, as SEAL clips its Gaussian
I64Array = npt.NDArray[np.int64]
SINGLE_WORD_FLOOD_BITS = 56  # above this, flooding noise is drawn as two 64-bit parts
MAX_FLOOD_BITS = 2 * SINGLE_WORD_FLOOD_BITS


def _noise_rng() -> np.random.Generator:
    return np.random.Generator(np.random.PCG64DXSM(secrets.randbits(128)))


def ternary(n: int) -> npt.NDArray[np.int8]:
    """n coefficients uniform in {-1, 0, 1}, by rejection on CSPRNG bytes."""
    out = np.empty(0, dtype=np.int8)
    while out.size < n:
        raw = np.frombuffer(os.urandom(2 * (n - out.size) + 16), dtype=np.uint8)
        kept = raw[raw < 255] % 3  # 255 = 3·85: bytes below it are uniform mod 3
        out = np.concatenate([out, kept.astype(np.int8) - 1])
    return out[:n]


def gaussian(shape: int | tuple[int, ...], sigma: float = KEY_SIGMA) -> I64Array:
    """Rounded Gaussian with standard deviation sigma, clipped at ⌊6σ⌋ by resampling."""
    rng = _noise_rng()
    clip = math.floor(6 * sigma)
    values = np.rint(rng.normal(0.0, sigma, size=shape)).astype(np.int64)
    bad = np.abs(values) > clip
    while bad.any():
        values[bad] = np.rint(rng.normal(0.0, sigma, size=int(bad.sum()))).astype(np.int64)
        bad = np.abs(values) > clip
    return values


def flooding_noise(shape: tuple[int, ...], sigma_bits: int, tail: int) -> I64Array:
    """Integer Gaussian of width 2^sigma_bits, clipped at tail·σ by resampling.

    A float64 draw scaled by σ has only 53 significant bits, so its low bits would be
    zero (a lattice that leaks the residue of what it masks). A uniform term of
    2^(sigma_bits−30) fills them; it changes the distribution by a negligible amount.
    """
    if sigma_bits > SINGLE_WORD_FLOOD_BITS:
        raise ValueError(f"2^{sigma_bits} does not fit a 64-bit word: use flooding_noise_rns")
    rng = _noise_rng()
    sigma = float(2**sigma_bits)
    low_bits = max(sigma_bits - 30, 0)
    limit = tail * sigma
    gauss = rng.normal(0.0, 1.0, size=shape)
    bad = np.abs(gauss) > tail - 1
    while bad.any():
        gauss[bad] = rng.normal(0.0, 1.0, size=int(bad.sum()))
        bad = np.abs(gauss) > tail - 1
    values = np.rint(gauss * sigma).astype(np.int64)
    if low_bits:
        values += rng.integers(-(1 << (low_bits - 1)), 1 << (low_bits - 1), size=shape)
    assert float(np.abs(values).max(initial=0)) < limit
    return values


def flooding_noise_rns(
    shape: tuple[int, ...], sigma_bits: int, tail: int, primes: tuple[int, ...]
) -> U64Array:
    """Flooding noise of width 2^sigma_bits as residues (*shape[:-1], L, N).

    Up to 2^56 it is :func:`flooding_noise`. Wider noise does not fit a 64-bit word, so it
    is the convolution F = x1 + 2^k·x2 of two independent draws of width 2^(sigma_bits−k)
    (k = ⌊sigma_bits/2⌋), computed mod each prime: F is within negligible statistical
    distance of a discrete Gaussian of width 2^(sigma_bits−k)·√(1 + 2^2k) ≥ 2^sigma_bits
    (Peikert, *An efficient and parallel Gaussian sampler for lattices*, CRYPTO 2010,
    Thm 3.1: both parts are far above the smoothing parameter of Z), and
    |F| ≤ tail·2^sigma_bits·(1 + 2^-k).
    """
    if sigma_bits <= SINGLE_WORD_FLOOD_BITS:
        return to_rns(flooding_noise(shape, sigma_bits, tail), primes)
    if sigma_bits > MAX_FLOOD_BITS:
        raise ValueError(f"flooding width 2^{sigma_bits} is beyond the two-part sampler")
    k = sigma_bits // 2
    low = to_rns(flooding_noise(shape, sigma_bits - k, tail), primes)
    high = to_rns(flooding_noise(shape, sigma_bits - k, tail), primes)
    out = np.empty_like(low)
    for j, q in enumerate(primes):
        scaled = mul_mod_shoup(high[..., j, :], shoup(np.uint64((1 << k) % q), q), q)
        out[..., j, :] = add_mod(low[..., j, :], scaled, q)
    return out


def uniform_mod(q: int, shape: tuple[int, ...]) -> U64Array:
    """Uniform residues mod q from the OS CSPRNG, by rejection."""
    count = math.prod(shape)
    mask = np.uint64((1 << q.bit_length()) - 1)
    out = np.empty(0, dtype=np.uint64)
    while out.size < count:
        raw = np.frombuffer(os.urandom(8 * (2 * (count - out.size) + 8)), dtype=np.uint64) & mask
        out = np.concatenate([out, raw[raw < np.uint64(q)]])
    return out[:count].reshape(shape)


def to_rns(values: npt.NDArray[np.integer], primes: tuple[int, ...]) -> U64Array:
    """Signed integers (|v| < 2^63) → residues, shape (*values.shape[:-1], len(primes), N)."""
    signed = values.astype(np.int64)
    residues = [np.mod(signed, np.int64(q)).astype(np.uint64) for q in primes]
    return np.stack(residues, axis=-2)
