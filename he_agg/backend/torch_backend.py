"""he_agg.rlwe's public-key encryption in torch int64: on a GPU when CUDA is present.

Word for word the output of :func:`he_agg.rlwe.encrypt_words` (the reference; tests check
it on every prime): with the data-prime rows (b̂, â) of the collective key, NTT form,

    c1 = â ⊙ NTT(u) + NTT(e1),    c0 = b̂ ⊙ NTT(u) + NTT(e0) + m̂      (mod each q_j)

u ternary, e0 and e1 small, m̂ the encoded block. The steps on the device: reduce u, e0,
e1 mod every prime (RNS), SEAL's forward negacyclic NTT (:mod:`he_agg.ntt`: Cooley–Tukey
sweeps over ψ's powers in bit-reversed order, each stage one vectorised butterfly over
every row of every prime and ciphertext at once), pointwise products with the key, adds.

**Exact w·a mod q in int64.** Every product here has a fixed multiplicand w (a twiddle
or a key word), so it is precomputed once with what the quotient estimate needs:

* q < 2^50: w/q as a double. a, w < 2^50 are exact doubles; fl(a·fl(w/q)) is within
  relative 2·2^-53 of a·w/q < 2^50, i.e. within 1/4 of it, so q̂ = ⌊fl(a·fl(w/q))⌋ is the
  true quotient ⌊a·w/q⌋ give or take 1 and r = a·w − q̂·q lies in [−q, 2q). a·w itself
  overflows int64, but two's-complement products wrap mod 2^64 and the true r is below
  2^51 in magnitude, so the wrapped difference *is* r. One correction each way (+q if
  r < 0, −q if r ≥ q) makes it exact.
* 2^50 ≤ q < 2^61: Shoup's method with w' = ⌊w·2^62/q⌋ < 2^62. q̂ = ⌊a·w'/2^62⌋ is
  built from 31-bit limbs (every partial product < 2^62, every sum < 2^63), and
  a·w/q − a·w'/2^62 < a/2^62 < 1/2, so q̂ ∈ {Q−1, Q}: r = a·w − q̂·q (wrapping, as above)
  lies in [0, 2q) and one subtraction makes it exact.

**Randomness.** u, e0 and e1 are drawn on the CPU by :func:`he_agg.rlwe.sample_witness`
from the OS CSPRNG and uploaded; torch's generators (CPU or CUDA) are not CSPRNGs and are
never used here.

**Noise.** Encryption modulo q directly (no special prime, no division) has the larger
fresh noise of :func:`he_agg.noise.proven_fresh_noise_bound`; only parameter sets whose
``fresh_noise_bound`` covers it (sets with ``proofs``) may use this backend's
:meth:`TorchBackend.encrypt`, which refuses any other with a ParameterError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from he_agg import noise
from he_agg.backend.base import Progress
from he_agg.backend.proven import encode_blocks
from he_agg.errors import ParameterError
from he_agg.modarith import F64Array, U64Array
from he_agg.ntt import ntt_tables
from he_agg.params import ParameterSet
from he_agg.public import PublicContext
from he_agg.rlwe import EncryptionWitness, KeyRows, key_rows, sample_witness

__all__ = [
    "DEFAULT_CHUNK",
    "DeviceBatch",
    "ModConstant",
    "TorchBackend",
    "covers",
    "default_device",
    "forward_ntt",
    "mod_constant",
    "mul_mod",
]

DEFAULT_CHUNK = 128  # ciphertexts per pass; peak ≈ 7 MB each on DEFAULT (≈ 270·L·N bytes)
FLOAT_PATH_BITS = 50  # primes below 2^50 take the float64 quotient estimate
MAX_PRIME_BITS = 61  # the limb path needs a < 2^61 and 2q < 2^63
_SHOUP_SHIFT = 62
_LIMB = 31
_LIMB_MASK = (1 << _LIMB) - 1
Tensor = torch.Tensor


def default_device() -> str:
    """The torch device to use by default: cuda when torch sees one, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def covers(params: ParameterSet) -> bool:
    """Whether ``params``' noise rules allow for he_agg.rlwe's fresh noise (sets with proofs)."""
    rlwe = noise.proven_fresh_noise_bound(params.poly_degree, params.committee_max)
    return rlwe <= params.fresh_noise_bound()


# ---- exact modular arithmetic --------------------------------------------------------------


@dataclass(frozen=True)
class ModConstant:
    """Fixed multiplicands w < q (int64) with their quotient helper: w/q as float64 when
    ``wide`` is false, ⌊w·2^62/q⌋ as int64 when it is true (see the module docstring)."""

    value: Tensor
    helper: Tensor
    wide: bool


def _is_wide(primes: tuple[int, ...]) -> bool:
    widest = max(q.bit_length() for q in primes)
    if widest > MAX_PRIME_BITS:
        raise ParameterError("backend", f"the torch backend takes primes below 2^{MAX_PRIME_BITS}")
    return widest > FLOAT_PATH_BITS


def mod_constant(values: U64Array, primes: tuple[int, ...], device: torch.device) -> ModConstant:
    """Precompute w (L, ...) for the primes along axis 0, every entry below its prime."""
    wide = _is_wide(primes)
    words = np.array(values, dtype=np.uint64)  # a copy: torch shares it, and keys are read-only
    if wide:
        helper = np.empty(words.shape, dtype=np.int64)
        for j, q in enumerate(primes):  # once per key or table: Python ints are exact
            row = words[j].reshape(-1).tolist()
            quotients = [(int(w) << _SHOUP_SHIFT) // q for w in row]
            helper[j] = np.array(quotients, dtype=np.int64).reshape(words[j].shape)
        extra: Tensor = torch.from_numpy(helper)
    else:
        shape = (len(primes),) + (1,) * (words.ndim - 1)
        moduli = np.array(primes, dtype=np.float64).reshape(shape)
        extra = torch.from_numpy(words.astype(np.float64) / moduli)
    value = torch.from_numpy(words.view(np.int64))
    return ModConstant(value.to(device), extra.to(device), wide)


def _mulhi62(a: Tensor, w_shoup: Tensor) -> Tensor:
    """⌊a·w'/2^62⌋ for 0 ≤ a < 2^61, 0 ≤ w' < 2^62, from 31-bit limbs (no overflow)."""
    a0, a1 = a & _LIMB_MASK, a >> _LIMB
    w0, w1 = w_shoup & _LIMB_MASK, w_shoup >> _LIMB
    middle = a1 * w0 + a0 * w1 + ((a0 * w0) >> _LIMB)  # < 2^61 + 2^62 + 2^31
    return a1 * w1 + (middle >> _LIMB)


def mul_mod(a: Tensor, w: ModConstant, q: Tensor) -> Tensor:
    """a·w mod q, exactly, for int64 a in [0, q) (w and q broadcast against a)."""
    if w.wide:
        r = a * w.value - _mulhi62(a, w.helper) * q  # in [0, 2q)
    else:
        estimate = (a.to(torch.float64) * w.helper).to(torch.int64)  # ⌊·⌋: it is ≥ 0
        r = a * w.value - estimate * q  # in [−q, 2q), wrapped products, exact difference
        r = torch.where(r < 0, r + q, r)
    return torch.where(r >= q, r - q, r)


def _add_mod(a: Tensor, b: Tensor, q: Tensor) -> Tensor:
    s = a + b
    return torch.where(s >= q, s - q, s)


def _sub_mod(a: Tensor, b: Tensor, q: Tensor) -> Tensor:
    d = a - b
    return torch.where(d < 0, d + q, d)


# ---- the NTT ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Twiddles:
    """ψ_j's powers in bit-reversed order, (L, N): stage m's roots are [:, m:2m] (SEAL's)."""

    roots: ModConstant
    moduli: Tensor  # (L, 1) int64


def _twiddles(primes: tuple[int, ...], n: int, device: torch.device) -> _Twiddles:
    rows = np.ones((len(primes), n), dtype=np.uint64)
    for j, q in enumerate(primes):
        stages = ntt_tables(q, n).forward_stages  # stage k holds 2^k roots, shape (2^k, 1)
        rows[j, 1:] = np.concatenate([stage.value.reshape(-1) for stage in stages])
    moduli = torch.tensor(primes, dtype=torch.int64, device=device).reshape(-1, 1)
    return _Twiddles(mod_constant(rows, primes, device), moduli)


def forward_ntt(values: Tensor, twiddles: _Twiddles) -> Tensor:
    """SEAL's negacyclic NTT of rows (..., L, N), entries in [0, q_j), axis −2 the primes:
    the butterfly sweep of :func:`he_agg.ntt.forward_reference`, one stage at a time."""
    *lead, levels, n = values.shape
    rows = int(np.prod(lead, dtype=np.int64))
    out = values.reshape(rows, levels, n).clone()
    q = twiddles.moduli.reshape(levels, 1, 1)
    roots = twiddles.roots
    m = 1
    while m < n:
        t = n // (2 * m)
        v = out.view(rows, levels, m, 2, t)
        stage = ModConstant(
            roots.value[:, m : 2 * m].reshape(levels, m, 1),
            roots.helper[:, m : 2 * m].reshape(levels, m, 1),
            roots.wide,
        )
        x = v[:, :, :, 0, :]
        y = mul_mod(v[:, :, :, 1, :], stage, q)
        v[:, :, :, 1, :] = _sub_mod(x, y, q)
        v[:, :, :, 0, :] = _add_mod(x, y, q)
        m *= 2
    return out.reshape(values.shape)


# ---- the backend --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceBatch:
    """One chunk on the device: plaintexts (C, L, N) and the stacked witness (3, C, N)."""

    plain: Tensor
    witness: Tensor


@dataclass(frozen=True)
class _DeviceKey:
    host: KeyRows
    b: ModConstant
    a: ModConstant


class TorchBackend:
    """he_agg.rlwe's encryption on a torch device, ``chunk`` ciphertexts at a time.

    Caches ψ's tables per (primes, N) and the last key's rows, on the device."""

    name = "torch"

    def __init__(
        self, device: str | torch.device | None = None, chunk: int = DEFAULT_CHUNK
    ) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.device = torch.device(default_device() if device is None else device)
        self.chunk = chunk
        self._tables: dict[tuple[tuple[int, ...], int], _Twiddles] = {}
        self._key: _DeviceKey | None = None

    # -- device-resident constants
    def twiddles(self, primes: tuple[int, ...], n: int) -> _Twiddles:
        if (primes, n) not in self._tables:
            self._tables[(primes, n)] = _twiddles(primes, n, self.device)
        return self._tables[(primes, n)]

    def _device_key(self, key: KeyRows) -> _DeviceKey:
        cached = self._key
        if cached is not None and (
            cached.host is key
            or (
                cached.host.primes == key.primes
                and np.array_equal(cached.host.b, key.b)
                and np.array_equal(cached.host.a, key.a)
            )
        ):
            return cached
        self._key = _DeviceKey(
            key,
            mod_constant(key.b, key.primes, self.device),
            mod_constant(key.a, key.primes, self.device),
        )
        return self._key

    # -- the stages (separate so benchmarks/bench_gpu.py can time each)
    def to_device(self, plain: U64Array, witness: EncryptionWitness) -> DeviceBatch:
        """One host→device copy of the plaintexts and one of the witness (int8 when every
        entry fits, as honest ones do: |e| ≤ 19)."""
        stacked = np.stack([witness.u.astype(np.int64), witness.e0, witness.e1])
        if np.abs(stacked).max(initial=0) < 128:
            stacked = stacked.astype(np.int8)
        words = np.ascontiguousarray(plain, dtype=np.uint64).view(np.int64)
        return DeviceBatch(
            torch.from_numpy(words).to(self.device), torch.from_numpy(stacked).to(self.device)
        )

    def encrypt_device(self, batch: DeviceBatch, key: KeyRows, params: ParameterSet) -> Tensor:
        """(c0, c1) of the batch on the device, int64 (C, 2, L, N)."""
        primes, n = params.data_primes, params.poly_degree
        twiddles = self.twiddles(primes, n)
        device_key = self._device_key(key)
        q = twiddles.moduli  # (L, 1)
        small = batch.witness.to(torch.int64).unsqueeze(2)  # (3, C, 1, N)
        rns = torch.remainder(small, q)  # (3, C, L, N), each in [0, q_j)
        u, e0, e1 = forward_ntt(rns, twiddles).unbind(0)
        c0 = _add_mod(_add_mod(mul_mod(u, device_key.b, q), e0, q), batch.plain, q)
        c1 = _add_mod(mul_mod(u, device_key.a, q), e1, q)
        return torch.stack([c0, c1], dim=1)

    @staticmethod
    def to_host(words: Tensor) -> U64Array:
        """One device→host copy; entries are below 2^61, so int64 and uint64 agree."""
        host: U64Array = words.cpu().numpy().view(np.uint64)
        return host

    # -- the contract of he_agg.rlwe.encrypt_words
    def encrypt_words(
        self, plain: U64Array, key: KeyRows, witness: EncryptionWitness, params: ParameterSet
    ) -> U64Array:
        """(c0, c1) of each encoded block ``plain`` (C, L, N, NTT form) under ``key`` with the
        given randomness; words (C, 2, L, N), equal to :func:`he_agg.rlwe.encrypt_words`'s."""
        primes, n = params.data_primes, params.poly_degree
        count = len(witness)
        if plain.shape != (count, len(primes), n):
            raise ValueError("the plaintexts and the witness disagree in shape")
        out = np.empty((count, 2, len(primes), n), dtype=np.uint64)
        for start in range(0, count, self.chunk):
            part = slice(start, start + self.chunk)
            chunk_witness = EncryptionWitness(witness.u[part], witness.e0[part], witness.e1[part])
            batch = self.to_device(plain[part], chunk_witness)
            out[part] = self.to_host(self.encrypt_device(batch, key, params))
        return out

    # -- the EncryptionBackend protocol
    def encrypt(
        self, values: F64Array, public: PublicContext, progress: Progress | None = None
    ) -> U64Array:
        """Encode (SEAL's encoder, CPU), draw the witness (OS CSPRNG, CPU), encrypt on the
        device, a chunk at a time; words (C, 2, L, N). No proofs: see he_agg.backend.proven.

        Raises ParameterError for a set whose noise rules do not allow for rlwe's noise."""
        params = public.params
        if not covers(params):
            rlwe = noise.proven_fresh_noise_bound(params.poly_degree, params.committee_max)
            raise ParameterError(
                "noise",
                f"parameter set {params.name!r} allows fresh noise "
                f"{params.fresh_noise_bound():.3g}, but the torch backend's encryption "
                f"(he_agg.rlwe, mod q without a special prime) has up to {rlwe:.3g}; "
                "use the SEAL backend, or a parameter set with proofs",
            )
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        slots = params.slots
        count = max(1, -(-flat.size // slots))
        key = key_rows(public)
        out = np.empty((count, 2, len(params.data_primes), params.poly_degree), np.uint64)
        for start in range(0, count, self.chunk):
            stop = min(start + self.chunk, count)
            plain = encode_blocks(flat[start * slots : stop * slots], public)
            witness = sample_witness(stop - start, params)
            out[start:stop] = self.encrypt_words(plain, key, witness, params)
            if progress is not None:
                progress(stop - start)
        return out
