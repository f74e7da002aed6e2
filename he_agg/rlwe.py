"""Public-key RLWE encryption modulo the data primes, with its randomness in the open.

SEAL encrypts in the key level (data primes and the special prime p) and divides by p,
which keeps fresh noise tiny but makes c1 a rounded quotient: a proof that c1 is well
formed would have to speak of the rounding too (PROOFS.md §2). Here encryption is done
directly modulo q = Π data primes, with the data-prime rows of the collective key
(b, a) = (−a·s + e, a):

    c1 = a·u + e1,    c0 = b·u + e0 + m        (mod q, NTT form per prime)

u ternary, e0 and e1 SEAL's clipped Gaussian, all from the OS CSPRNG
(:mod:`he_agg.sampling`). The output is SEAL's own ciphertext layout at the first data
level (SEAL decrypts it; tests check that with the summed key), and it is a pure
function of the plaintext and an :class:`EncryptionWitness`, so every backend can be
checked word for word against it. The witness is what :mod:`he_agg.wellformed` proves
knowledge of; it never leaves the client.

Fresh noise is b·u's error plus e0 + e1·s: ‖e_pk·u + e0 + e1·s‖∞ ≤ N·n·B_e + B_e + N·n·B_e
for a committee of n (``fresh_noise_bound``), about 2^6 larger than SEAL's divided noise;
the parameter rules take it from there.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from he_agg import encrypt_compiled, noise, ntt
from he_agg.modarith import ShoupConstant, U64Array, add_mod, mul_mod_shoup, shoup
from he_agg.params import ParameterSet
from he_agg.public import PublicContext
from he_agg.sampling import gaussian, ternary, to_rns

_KEEP = 8
_recent: dict[tuple[bytes, bool, bytes], KeyRows] = {}
_recent_lock = threading.Lock()

__all__ = [
    "EncryptionWitness",
    "KeyRows",
    "check_inputs",
    "encrypt_words",
    "encrypt_words_reference",
    "fresh_noise_bound",
    "key_rows",
    "sample_witness",
]


@dataclass(frozen=True)
class EncryptionWitness:
    """The randomness of C encryptions: u ternary, e0 and e1 bounded by B_e (C, N) each."""

    u: npt.NDArray[np.int8]
    e0: npt.NDArray[np.int64]
    e1: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if not self.u.shape == self.e0.shape == self.e1.shape or self.u.ndim != 2:
            raise ValueError("u, e0 and e1 must all be (C, N)")

    def __len__(self) -> int:
        return int(self.u.shape[0])


def sample_witness(count: int, params: ParameterSet) -> EncryptionWitness:
    """Fresh randomness for ``count`` encryptions (OS CSPRNG)."""
    n = params.poly_degree
    u = ternary(count * n).reshape(count, n)
    noise = gaussian((2, count, n))
    return EncryptionWitness(u, noise[0], noise[1])


@dataclass(frozen=True)
class KeyRows:
    """The collective key's data-prime rows (b̂, â), NTT form (L, N), with Shoup constants."""

    b: U64Array
    a: U64Array
    primes: tuple[int, ...]
    _b: tuple[ShoupConstant, ...] = field(init=False, repr=False, compare=False)
    _a: tuple[ShoupConstant, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # the Shoup constants, once per key (hot path)
        object.__setattr__(
            self, "_b", tuple(shoup(r, q) for r, q in zip(self.b, self.primes, strict=True))
        )
        object.__setattr__(
            self, "_a", tuple(shoup(r, q) for r, q in zip(self.a, self.primes, strict=True))
        )

    @cached_property
    def a_quotients(self) -> tuple[U64Array, ...]:
        """⌊â_j·2^64/q_j⌋ per coefficient and prime: Shoup quotients for the compiled
        kernels (he_agg.ntt_compiled.affine_rows), computed once per key."""
        return _quotients(self.a, self.primes)

    @cached_property
    def b_quotients(self) -> tuple[U64Array, ...]:
        """The same for b̂ (he_agg.seal_encryption's kernel)."""
        return _quotients(self.b, self.primes)

    def a_times(self, values: U64Array, j: int, q: int) -> U64Array:
        """â_j ⊙ values (NTT form, one prime)."""
        return mul_mod_shoup(values, self._a[j], q)

    def b_times(self, values: U64Array, j: int, q: int) -> U64Array:
        return mul_mod_shoup(values, self._b[j], q)


def _quotients(rows: U64Array, primes: tuple[int, ...]) -> tuple[U64Array, ...]:
    return tuple(
        np.array([(int(x) << 64) // q for x in row.tolist()], dtype=np.uint64)
        for row, q in zip(rows, primes, strict=True)
    )


def key_rows(public: PublicContext, *, key_level: bool = False) -> KeyRows:
    """The data-prime rows of the collective public key (SEAL lists the special prime last),
    or with ``key_level`` every row, the special prime's last. The rows of the last few keys
    are kept, read-only, with their Shoup quotients (computed once per key: the server's
    intake and every client encryption ask for them)."""
    params = public.params
    data = np.ascontiguousarray(public.public_key.data)
    name = (params.fingerprint, key_level, hashlib.sha256(data.data.cast("B")).digest())
    with _recent_lock:
        rows = _recent.pop(name, None)
        if rows is None:
            count = len(params.data_primes) + (1 if key_level else 0)
            b, a = data[0, :count].copy(), data[1, :count].copy()
            b.flags.writeable = a.flags.writeable = False
            primes = (*params.data_primes, params.special_prime)[:count]
            rows = KeyRows(b, a, primes)
            rows.a_quotients, rows.b_quotients  # noqa: B018 - computed now, under the lock
        _recent[name] = rows  # the most recent last
        while len(_recent) > _KEEP:
            _recent.pop(next(iter(_recent)))
    return rows


def _ntt_rows(values: npt.NDArray[np.integer], primes: tuple[int, ...]) -> U64Array:
    """Small signed integers (C, N) → NTT form (C, L, N)."""
    rns = to_rns(np.asarray(values, dtype=np.int64), primes)  # (C, L, N)
    return np.stack([ntt.forward(rns[:, j], q) for j, q in enumerate(primes)], axis=1)


def check_inputs(
    plain: U64Array,
    key: KeyRows,
    witness: EncryptionWitness,
    params: ParameterSet,
    key_level: bool = False,
) -> None:
    """ValueError unless the key's rows are at the set's data primes (and, ``key_level``,
    the special prime) and the plaintexts and the witness agree in shape."""
    primes = (*params.data_primes, params.special_prime) if key_level else params.data_primes
    if key.primes != primes:
        raise ValueError(
            "the key's rows are not at this set's "
            + ("key-level primes" if key_level else "data primes")
        )
    if plain.shape != (len(witness), len(params.data_primes), params.poly_degree):
        raise ValueError("the plaintexts and the witness disagree in shape")


def encrypt_words(
    plain: U64Array, key: KeyRows, witness: EncryptionWitness, params: ParameterSet
) -> U64Array:
    """(c0, c1) of each encoded block ``plain`` (C, L, N, NTT form) under ``key`` with the
    given randomness; words (C, 2, L, N) in SEAL's layout. Compiled
    (:mod:`he_agg.encrypt_compiled`); word for word :func:`encrypt_words_reference`."""
    check_inputs(plain, key, witness, params)
    return encrypt_compiled.encrypt_rows(plain, key, witness, divide=False)


def encrypt_words_reference(
    plain: U64Array, key: KeyRows, witness: EncryptionWitness, params: ParameterSet
) -> U64Array:
    """The numpy composition of :func:`encrypt_words` (its reference)."""
    check_inputs(plain, key, witness, params)
    primes = params.data_primes
    u, e0, e1 = (_ntt_rows(x, primes) for x in (witness.u, witness.e0, witness.e1))
    out = np.empty((len(witness), 2, len(primes), params.poly_degree), dtype=np.uint64)
    for j, q in enumerate(primes):
        out[:, 0, j] = add_mod(add_mod(key.b_times(u[:, j], j, q), e0[:, j], q), plain[:, j], q)
        out[:, 1, j] = add_mod(key.a_times(u[:, j], j, q), e1[:, j], q)
    return out


def fresh_noise_bound(params: ParameterSet) -> float:
    """‖e_pk·u + e0 + e1·s‖∞ for a committee of ``committee_max`` (he_agg.noise term (f))."""
    return noise.proven_fresh_noise_bound(params.poly_degree, params.committee_max)
