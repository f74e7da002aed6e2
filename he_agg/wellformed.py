"""Zero-knowledge proof that every c1 of an upload is an honest RLWE sample.

Relation (PROOFS.md §3): public a (the CRS half of the collective key, data primes) and
c1_1 … c1_n; the prover knows u_i ternary and e_i with ‖e_i‖∞ ≤ B_e such that

    c1_i = a·u_i + e_i   (mod q),   for every i.

Protocol: an amortised Σ-protocol with **binary** challenges, made non-interactive with
Fiat–Shamir with aborts. For j = 1 … m (m = ROWS):

    masks   y_j = (yu_j, ye_j) uniform in [−γ_u, γ_u]^N × [−γ_e, γ_e]^N   (OS CSPRNG)
    w_j     = a·yu_j + ye_j                   (mod q, hashed in the coefficient domain)
    C       = SHAKE-256(context ‖ digest(c1_1 … c1_n) ‖ digest(w_1 … w_m)) ∈ {0,1}^{m×n}
    z_j     = y_j + Σ_i C_ji·(u_i, e_i)        kept only if ‖zu_j‖∞ ≤ γ_u − β_u and
                                               ‖ze_j‖∞ ≤ γ_e − β_e for every j, else restart

The proof is (seed of C, zu, ze). The verifier checks the norms, recomputes
w_j = a·zu_j + ze_j − Σ_i C_ji·c1_i and the seed. Two accepting answers for challenges
that differ only in column i give, row by row, a(zu − zu′) + (ze − ze′) = ±c1_i: an
**exact** opening of c1_i (no challenge-difference factor) with ‖ū‖∞ ≤ 2γ_u and
‖ē‖∞ ≤ 2γ_e. A prover that cannot open c1_i answers at most one value of column i for each
value of the other columns, so it convinces with probability ≤ 2^−m per hash query.
Why the relation must be exact, the zero-knowledge argument and the noise rule that
carries the 2γ slack: PROOFS.md.

All arithmetic is per data prime in NTT form (c1 as the envelope carries it); the hash
binds the context (parameter set, federation, epoch, round, client, roster digest), the
ciphertext count and every c1 word, and every w word.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from he_agg import bitpack, ntt
from he_agg.errors import ProtocolError
from he_agg.modarith import U64Array, add_mod, mul_mod_shoup, shoup, sub_mod
from he_agg.noise import PROOF_GROUP, PROOF_ROWS, proof_masks
from he_agg.params import ParameterSet
from he_agg.rlwe import EncryptionWitness, KeyRows
from he_agg.sampling import to_rns

__all__ = [
    "NO_ROSTER",
    "ROWS",
    "ProofBounds",
    "ProofContext",
    "ProofError",
    "WellFormedProof",
    "challenge_matrix",
    "groups",
    "proof_bounds",
    "proof_size",
    "proofs_size",
    "prove",
    "prove_upload",
    "set_threads",
    "verify",
    "verify_group",
    "verify_upload",
]

ROWS = PROOF_ROWS
NO_ROSTER = bytes(32)  # the roster digest of in-process runs, which have no roster
_DOMAIN = b"he-agg/wellformed/v2\x00"  # v2: the seed is SHA-256 (v1: BLAKE2b)
_SEED_BYTES = 32
I64Array = npt.NDArray[np.int64]


class ProofError(ProtocolError):
    """A proof of well-formed ciphertexts that does not verify; ``first``/``last`` name the
    ciphertext indices it covers."""

    def __init__(self, message: str, first: int = 0, last: int = 0) -> None:
        super().__init__(f"ciphertexts {first}–{last}: {message}")
        self.first, self.last = first, last


@dataclass(frozen=True)
class ProofContext:
    """What the Fiat–Shamir hash binds besides the ciphertexts: a proof made for one
    upload target is worth nothing for another."""

    parameters: bytes  # ParameterSet.fingerprint
    federation: str
    epoch: int
    round: int
    client: str
    roster_digest: bytes
    first_index: int = 0  # index of the first ciphertext covered, within the upload

    def encode(self) -> bytes:
        parts = [self.parameters, self.roster_digest]
        parts += [x.encode() for x in (self.federation, self.client)]
        parts += [str(x).encode() for x in (self.epoch, self.round, self.first_index)]
        return b"".join(len(p).to_bytes(4, "little") + p for p in parts)


@dataclass(frozen=True)
class ProofBounds:
    """m, the mask widths γ and the shift bounds β for n ciphertexts (PROOFS.md §4)."""

    rows: int
    count: int
    beta_u: int
    beta_e: int
    gamma_u: int  # 2^k − 1
    gamma_e: int

    @property
    def width_u(self) -> int:
        """Bits of one packed zu coefficient: z + (γ − β) lies in [0, 2(γ − β)]."""
        return (2 * (self.gamma_u - self.beta_u)).bit_length()

    @property
    def width_e(self) -> int:
        return (2 * (self.gamma_e - self.beta_e)).bit_length()

    def acceptance(self, n: int) -> float:
        """The probability that one attempt passes rejection (both parts, all rows)."""
        keep_u = (2 * (self.gamma_u - self.beta_u) + 1) / (2 * self.gamma_u + 1)
        keep_e = (2 * (self.gamma_e - self.beta_e) + 1) / (2 * self.gamma_e + 1)
        return float((keep_u * keep_e) ** (self.rows * n))


def proof_bounds(params: ParameterSet, count: int, rows: int = ROWS) -> ProofBounds:
    """The bounds for ``count`` ciphertexts (he_agg.noise.proof_masks, which the parameter
    rules use too): β bounds each coefficient of Σ_i C_ji·x_i for every row and coefficient
    at once except with probability 2^-40 (the prover then restarts); γ = 2^k − 1 ≥
    2·m·N·β keeps each part with probability ≥ e^-1/2."""
    masks = proof_masks(params.poly_degree, count, rows)
    return ProofBounds(rows, count, masks.beta_u, masks.beta_e, masks.gamma_u, masks.gamma_e)


def proof_size(params: ParameterSet, count: int) -> int:
    """Bytes of one proof for ``count`` ciphertexts."""
    bounds = proof_bounds(params, count)
    cells = bounds.rows * params.poly_degree
    return (
        _SEED_BYTES
        + bitpack.packed_size(cells, bounds.width_u)
        + bitpack.packed_size(cells, bounds.width_e)
    )


def groups(count: int) -> list[tuple[int, int]]:
    """(first, count) of each proof group of an upload of ``count`` ciphertexts."""
    return [(g, min(PROOF_GROUP, count - g)) for g in range(0, count, PROOF_GROUP)]


def proofs_size(params: ParameterSet, count: int) -> int:
    """Bytes of all the proofs of an upload of ``count`` ciphertexts."""
    return sum(proof_size(params, size) for _, size in groups(count))


@dataclass(frozen=True)
class WellFormedProof:
    seed: bytes  # 32 bytes: the challenge seed
    zu: I64Array  # (m, N)
    ze: I64Array  # (m, N)

    def to_bytes(self, bounds: ProofBounds) -> bytes:
        offset_u, offset_e = bounds.gamma_u - bounds.beta_u, bounds.gamma_e - bounds.beta_e
        packed_u = bitpack.pack((self.zu + offset_u).astype(np.uint64).ravel(), bounds.width_u)
        packed_e = bitpack.pack((self.ze + offset_e).astype(np.uint64).ravel(), bounds.width_e)
        return self.seed + packed_u + packed_e

    @classmethod
    def from_bytes(cls, data: bytes, bounds: ProofBounds, n: int) -> WellFormedProof:
        """Parse; ProofError if the size is wrong or a coefficient is out of its range."""
        count = bounds.rows * n
        size_u = bitpack.packed_size(count, bounds.width_u)
        size_e = bitpack.packed_size(count, bounds.width_e)
        if len(data) != _SEED_BYTES + size_u + size_e:
            raise ProofError(f"the proof is {len(data)} bytes, not {_SEED_BYTES + size_u + size_e}")
        view = memoryview(data)
        raw_u = bitpack.unpack(view[_SEED_BYTES : _SEED_BYTES + size_u], bounds.width_u, count)
        raw_e = bitpack.unpack(view[_SEED_BYTES + size_u :], bounds.width_e, count)
        zu = raw_u.astype(np.int64).reshape(bounds.rows, n) - (bounds.gamma_u - bounds.beta_u)
        ze = raw_e.astype(np.int64).reshape(bounds.rows, n) - (bounds.gamma_e - bounds.beta_e)
        return cls(bytes(data[:_SEED_BYTES]), zu, ze)


def challenge_matrix(seed: bytes, rows: int, count: int) -> npt.NDArray[np.uint8]:
    """C ∈ {0,1}^{rows×count}, expanded from the seed with SHAKE-256."""
    stream = hashlib.shake_256(_DOMAIN + b"challenge\x00" + seed).digest((rows * count + 7) // 8)
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8), bitorder="little")
    return bits[: rows * count].reshape(rows, count)


def _statement_hash(context: ProofContext, c1: U64Array) -> hashlib._Hash:
    """The Fiat–Shamir hash over the context and c1, before the commitments: SHA-256 of
    domain ‖ "seed" ‖ context ‖ shape ‖ words (every part of fixed length or
    length-prefixed). SHA-256 because it reads the tens of megabytes of words fastest where
    the CPU has SHA instructions (x86 SHA-NI, ARMv8), 3× BLAKE2b and 6× SHAKE-256 here,
    and is FIPS 180-4; C is then expanded with SHAKE-256. A prover copies it for every
    attempt rather than hashing c1 again."""
    h = hashlib.sha256(_DOMAIN + b"seed\x00")
    h.update(context.encode())
    h.update(np.asarray(c1.shape, dtype="<u8").tobytes())
    _hash_words(h, c1)
    return h


def _hash_words(h: hashlib._Hash, words: U64Array) -> None:
    """Feed the words' bytes, little-endian, in order: a contiguous block at a time, so a
    strided view (an upload's c1, between its c0's) is hashed without copying it whole."""
    if words.ndim > 1 and not words.flags.c_contiguous and words.dtype == np.dtype("<u8"):
        for block in words:
            _hash_words(h, block)
        return
    h.update(np.ascontiguousarray(words, dtype="<u8").data.cast("B"))


def _seed(statement: hashlib._Hash, w: U64Array) -> bytes:
    """The seed: the statement's hash (:func:`_statement_hash`) continued over w."""
    h = statement.copy()
    _hash_words(h, w)
    digest: bytes = h.digest()
    return digest


def _uniform(gamma: int, shape: tuple[int, ...]) -> I64Array:
    """Uniform integers in [−γ, γ] (γ = 2^k − 1) from the OS CSPRNG, by rejection: draw
    in [0, 2·(γ+1)) from the low bits of 4-byte words (8-byte ones for γ ≥ 2^31) and drop
    the top value."""
    span = gamma + 1  # 2γ + 1 = 2·span − 1 values; draw in [0, 2·span) and drop the top
    word = "<u4" if 2 * span <= 1 << 32 else "<u8"
    width = np.dtype(word).itemsize
    top = np.array(2 * span - 1, dtype=word)
    size = int(np.prod(shape))
    out = np.empty(0, dtype=np.int64)
    while out.size < size:
        need = size - out.size
        raw = np.frombuffer(os.urandom(width * (need + 64)), dtype=word) & top
        kept = raw[raw != top].astype(np.int64) - gamma
        out = np.concatenate([out, kept])
    return out[:size].reshape(shape)


def _combine_words(matrix: npt.NDArray[np.uint8], words: U64Array, q: int) -> U64Array:
    """Σ_i C_ji·words_i mod q for every row j (words (n, N) < q), compiled
    (:mod:`he_agg.challenge_compiled`) unless the numpy reference is asked for
    (HE_AGG_NTT=numpy; :func:`_combine_words_reference`)."""
    if not ntt.COMPILED:
        return _combine_words_reference(matrix, words, q)
    from he_agg import challenge_compiled

    return challenge_compiled.challenge_sums(matrix, words, q)


def _combine_words_reference(matrix: npt.NDArray[np.uint8], words: U64Array, q: int) -> U64Array:
    """Σ_i C_ji·words_i mod q for every row j (words (n, N) < q < 2^50), exactly, with BLAS:
    each word splits into 25-bit halves, whose sums of ≤ n < 2^28 stay exact in float64."""
    c = matrix.astype(np.float64)
    low = (words & np.uint64((1 << 25) - 1)).astype(np.float64)
    high = (words >> np.uint64(25)).astype(np.float64)
    lo = np.rint(c @ low).astype(np.uint64) % np.uint64(q)
    hi = np.rint(c @ high).astype(np.uint64) % np.uint64(q)
    return add_mod(mul_mod_shoup(hi, shoup(np.uint64((1 << 25) % q), q), q), lo, q)


def _commitments(
    zu: I64Array,
    ze: I64Array,
    key: KeyRows,
    params: ParameterSet,
    minus: list[U64Array] | None = None,
) -> U64Array:
    """w = a·zu + ze (− the NTT-form ``minus`` per prime), per row and prime, in the
    coefficient domain (m, L, N): one forward and one inverse NTT per row and prime, fused
    in one compiled pass per row (he_agg.ntt_compiled.affine_rows) unless the numpy
    reference is asked for (HE_AGG_NTT=numpy; :func:`_commitments_reference`)."""
    if not ntt.COMPILED:
        return _commitments_reference(zu, ze, key, params, minus)
    from he_agg import ntt_compiled

    primes = params.data_primes
    rows = zu.shape[0]
    out = np.empty((rows, len(primes), params.poly_degree), dtype=np.uint64)

    def one(task: tuple[int, slice]) -> None:
        j, part = task
        ntt_compiled.affine_rows(
            zu[part],
            ze[part],
            key.a[j],
            key.a_quotients[j],
            primes[j],
            None if minus is None else minus[j][part],
            out[part, j],
        )

    threads = _threads()
    chunks = 1 if threads is None else min(_THREADS, max(1, rows // _MIN_ROWS_PER_TASK))
    edges = [rows * i // chunks for i in range(chunks + 1)]
    tasks = [(j, slice(edges[i], edges[i + 1])) for j in range(len(primes)) for i in range(chunks)]
    if threads is None or len(tasks) == 1:
        for task in tasks:
            one(task)
    else:  # the kernels release the GIL: each core takes a share of the rows
        list(threads.map(one, tasks))
    return out


def _default_threads() -> int:
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


_THREADS = _default_threads()
_MIN_ROWS_PER_TASK = 16
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def set_threads(count: int | None = None) -> None:
    """Cap the threads that a proof's commitments are shared out to (``None``: every core,
    up to 8), for a one-core figure or a process that shares its cores; proofs are the
    same either way. Call it while no proof is being made."""
    global _THREADS, _pool
    with _pool_lock:
        _THREADS = _default_threads() if count is None else max(1, count)
        if _pool is not None:
            _pool.shutdown(wait=False)  # running maps finish; the next use starts afresh
            _pool = None


def _threads() -> ThreadPoolExecutor | None:
    """This process's threads for the commitments (None on one core), started on first use."""
    global _pool
    if _THREADS < 2:
        return None
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="he-agg-proof")
        return _pool


def _commitments_reference(
    zu: I64Array,
    ze: I64Array,
    key: KeyRows,
    params: ParameterSet,
    minus: list[U64Array] | None = None,
) -> U64Array:
    """:func:`_commitments` in numpy: the reference the compiled pass is tested against."""
    primes = params.data_primes
    u_rns, e_rns = to_rns(zu, primes), to_rns(ze, primes)  # (m, L, N)
    out = np.empty((zu.shape[0], len(primes), params.poly_degree), dtype=np.uint64)
    for j, q in enumerate(primes):
        product = key.a_times(ntt.forward(u_rns[:, j], q), j, q)
        if minus is not None:
            product = sub_mod(product, minus[j], q)
        out[:, j] = add_mod(ntt.inverse(product, q), e_rns[:, j], q)
    return out


def prove(
    c1: U64Array,
    witness: EncryptionWitness,
    key: KeyRows,
    params: ParameterSet,
    context: ProofContext,
    bounds: ProofBounds | None = None,
    attempts: list[int] | None = None,
) -> WellFormedProof:
    """A proof for c1 (n, L, N, NTT form) = a·u + e1 with the witness's u and e1.

    ``attempts``, if given, gets the number of attempts rejection sampling took."""
    count = c1.shape[0]
    bounds = bounds or proof_bounds(params, count)
    n = params.poly_degree
    secret_u = witness.u.astype(np.float64)
    secret_e = witness.e1.astype(np.float64)
    statement = _statement_hash(context, c1)
    tries = 0
    while True:
        tries += 1
        yu = _uniform(bounds.gamma_u, (bounds.rows, n))
        ye = _uniform(bounds.gamma_e, (bounds.rows, n))
        w = _commitments(yu, ye, key, params)
        seed = _seed(statement, w)
        matrix = challenge_matrix(seed, bounds.rows, count).astype(np.float64)
        shift_u = np.rint(matrix @ secret_u).astype(np.int64)
        shift_e = np.rint(matrix @ secret_e).astype(np.int64)
        if np.abs(shift_u).max() > bounds.beta_u or np.abs(shift_e).max() > bounds.beta_e:
            continue  # beyond the public shift bound (probability ≤ 2^-40): start again
        zu, ze = yu + shift_u, ye + shift_e
        if (
            np.abs(zu).max() <= bounds.gamma_u - bounds.beta_u
            and np.abs(ze).max() <= bounds.gamma_e - bounds.beta_e
        ):
            if attempts is not None:
                attempts.append(tries)
            return WellFormedProof(seed, zu, ze)


def verify(
    c1: U64Array,
    proof: WellFormedProof,
    key: KeyRows,
    params: ParameterSet,
    context: ProofContext,
    bounds: ProofBounds | None = None,
) -> None:
    """Return if the proof verifies for c1 (n, L, N, NTT form); ProofError otherwise."""
    count = c1.shape[0]
    first, last = context.first_index, context.first_index + count - 1
    bounds = bounds or proof_bounds(params, count)
    shape = (bounds.rows, params.poly_degree)
    if proof.zu.shape != shape or proof.ze.shape != shape or len(proof.seed) != _SEED_BYTES:
        raise ProofError("the proof has the wrong shape", first, last)
    if (
        np.abs(proof.zu).max() > bounds.gamma_u - bounds.beta_u
        or np.abs(proof.ze).max() > bounds.gamma_e - bounds.beta_e
    ):
        raise ProofError("a response is out of range", first, last)
    matrix = challenge_matrix(proof.seed, bounds.rows, count)
    combined = [_combine_words(matrix, c1[:, j], q) for j, q in enumerate(params.data_primes)]
    w = _commitments(proof.zu, proof.ze, key, params, combined)
    if _seed(_statement_hash(context, c1), w) != proof.seed:
        raise ProofError("the proof does not verify", first, last)


def prove_upload(
    words: U64Array,
    witness: EncryptionWitness,
    key: KeyRows,
    params: ParameterSet,
    context: ProofContext,
    attempts: list[int] | None = None,
) -> tuple[bytes, ...]:
    """One proof per group of ≤ PROOF_GROUP ciphertexts of an upload (words (C, 2, L, N)),
    each bound to its first index (counted from ``context.first_index``, so a client may
    prove a run of whole groups apart); ``attempts`` gets each group's rejection attempts."""
    out = []
    for first, size in groups(words.shape[0]):
        part = slice(first, first + size)
        sub = EncryptionWitness(witness.u[part], witness.e0[part], witness.e1[part])
        bound = dataclasses.replace(context, first_index=context.first_index + first)
        proof = prove(words[part, 1], sub, key, params, bound, attempts=attempts)
        out.append(proof.to_bytes(proof_bounds(params, size)))
    return tuple(out)


def verify_upload(
    words: U64Array,
    proofs: tuple[bytes, ...],
    key: KeyRows,
    params: ParameterSet,
    context: ProofContext,
) -> None:
    """Every group's proof verifies for the upload's c1 words; ProofError naming the first
    group (its ciphertext indices) that does not."""
    layout = groups(words.shape[0])
    if len(proofs) != len(layout):
        raise ProofError(f"{len(proofs)} proofs for {len(layout)} groups", 0, words.shape[0] - 1)
    for (first, size), blob in zip(layout, proofs, strict=True):
        bound = dataclasses.replace(context, first_index=first)
        verify_group(words[first : first + size], blob, key, params, bound)


def verify_group(
    words: U64Array, blob: bytes, key: KeyRows, params: ParameterSet, context: ProofContext
) -> None:
    """One group's proof (as carried) for its ciphertexts' words (size, 2, L, N), the
    group starting at ``context.first_index`` of the upload: a server can verify an upload
    a group at a time, holding one group's words."""
    size = words.shape[0]
    first = context.first_index
    bounds = proof_bounds(params, size)
    try:
        proof = WellFormedProof.from_bytes(blob, bounds, params.poly_degree)
    except ProofError as exc:
        raise ProofError(str(exc).split(": ", 1)[-1], first, first + size - 1) from exc
    verify(words[:, 1], proof, key, params, context, bounds)
