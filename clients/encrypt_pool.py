"""Encrypting one update on every core: threads where the kernels release the GIL, else
processes.

The default backend (``native``: he-agg's compiled encoding and encryption) runs in numba
kernels, numpy's FFT and the OS CSPRNG, which all release the GIL, so the pool is threads
in this process: nothing crosses a pipe (a process pool's round trip of 1M values out and
the words back costs what the second core saves). SEAL's own Encryptor (``seal``) holds
the GIL, so with it the pool is processes, as before; but a set with proofs never calls
SEAL's Encryptor (its words come from he_agg.rlwe's kernels), so it is threads again.

Without proofs, the update's blocks are cut into runs of ciphertexts and each worker
encodes and encrypts a run. With proofs, each proof group (≤ PROOF_GROUP ciphertexts) is
proven once, over all its blocks: on threads, the group's runs are encrypted with fresh
CSPRNG randomness (:func:`he_agg.backend.proven.encrypt_for_proof`) and the caller proves
the group (its commitments run on threads too) while the workers encrypt the next one; in
processes, each task encrypts and proves one whole group (:func:`_encrypt_and_prove`). Either
way the randomness stays in the process that drew it and is dropped once proven. The output
is what one thread would produce (the same layout, each group's proof bound to its first
index), so nothing downstream knows how many cores made it.

Worker processes are spawned (no fork: a client may have threads, and SEAL a global mutex)
without the caller's ``__main__``: multiprocessing would otherwise run a user's script again
in every worker, or refuse to start from one without an ``if __name__ == "__main__"`` guard;
the workers need only this module. They hold the public context they were started with.
:class:`EncryptionPool` starts its workers lazily; :func:`pool_for` shares one pool per key
among every client in a process (a simulation's, say) and keeps it for the next round, so
the cores are shared, not multiplied. On threads, updates take turns: each gets every core,
so the first is ready to upload after 1/k of the time that k sharing the cores would take
(measured on ResNet-18's round with proofs, three clients: 118.7 s sharing, 105.3 s taking
turns, 103.7–105.9 s on processes in the same runs). Updates smaller than ``THREAD_MIN_CIPHERTEXTS``
(threads) or ``POOL_MIN_CIPHERTEXTS`` (processes) are encrypted by the caller alone, where a
pool would cost more than it saves. Memory, besides the output: on threads, at most
``2 × workers`` runs are in flight at once (their values, words and randomness) and one
group's randomness waits for its proof; a worker process holds one run or group at a time.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from typing import TypeVar

import numpy as np

from he_agg import wellformed
from he_agg.backend import encrypt_vector, releases_gil
from he_agg.backend.proven import encrypt_for_proof, encrypt_with_proofs
from he_agg.encoding import blocks
from he_agg.modarith import F64Array, U64Array
from he_agg.params import ParameterSet
from he_agg.public import PublicContext
from he_agg.rlwe import EncryptionWitness, key_rows

__all__ = [
    "POOL_MIN_CIPHERTEXTS",
    "THREAD_MIN_CIPHERTEXTS",
    "EncryptionPool",
    "default_workers",
    "pool_for",
]

T = TypeVar("T")
RUN = 32  # ciphertexts per process task: enough to amortise a task, small enough to share out
THREAD_RUN = 16  # ciphertexts per thread task (the native backend's batch)
POOL_MIN_CIPHERTEXTS = 64  # below this (about 500k parameters at N = 8192), no process pool
THREAD_MIN_CIPHERTEXTS = 2 * THREAD_RUN  # below this, no threads
_SHARED_POOLS = 2  # pools kept at once (one per key); the oldest is closed past this
_public: PublicContext | None = None  # a worker's key, set by its initializer
log = logging.getLogger("he_agg.client")


def default_workers() -> int:
    """Every core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_main_lock = threading.Lock()


@contextlib.contextmanager
def _without_main() -> Iterator[None]:
    """Hide ``__main__`` from multiprocessing while it spawns workers, so they do not
    import (run) the caller's script; they need only this module."""
    with _main_lock:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__, no __spec__
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


def _start(public: PublicContext) -> None:
    global _public
    _public = public


def _encrypt_run(values: F64Array) -> tuple[U64Array, tuple[bytes, ...]]:
    """One run's words (a set without proofs: no proofs)."""
    assert _public is not None, "worker started without a public context"
    return encrypt_vector(values, _public), ()


def _encrypt_and_prove(
    values: F64Array, context: wellformed.ProofContext
) -> tuple[U64Array, tuple[bytes, ...]]:
    """One proof group's words and proof; its randomness is dropped here, in the worker."""
    assert _public is not None, "worker started without a public context"
    return encrypt_with_proofs(values, _public, context)


def _ordered(
    executor: Executor, fn: Callable[..., T], calls: Iterable[tuple[object, ...]], window: int
) -> Iterator[T]:
    """``fn(*args)`` for each of ``calls``, in order, with at most ``window`` submitted and
    unfinished at once (so the memory in flight is bounded)."""
    pending: collections.deque[Future[T]] = collections.deque()
    for args in calls:
        pending.append(executor.submit(fn, *args))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class EncryptionPool:
    """``workers`` threads or processes encrypting under one public context (1: the caller
    alone). ``threads`` defaults to whether the encryption backend releases the GIL."""

    def __init__(
        self, public: PublicContext, workers: int | None = None, *, threads: bool | None = None
    ) -> None:
        self.public = public
        self.workers = max(1, workers or default_workers())
        self.threads = releases_gil(proofs=public.params.proofs) if threads is None else threads
        self._executor: Executor | None = None
        self._lock = threading.Lock()  # clients of one simulation share a pool
        self._turn = threading.Lock()  # one update at a time on the threads (see encrypt)

    def serves(self, public: PublicContext) -> bool:
        """Whether this pool encrypts under ``public`` (the same parameters and key)."""
        if public is self.public:
            return True
        mine, theirs = self.public.public_key, public.public_key
        return (
            public.params.fingerprint == self.public.params.fingerprint
            and mine.parms_id == theirs.parms_id
            and np.array_equal(mine.data, theirs.data)
        )

    def __enter__(self) -> EncryptionPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _pool(self) -> Executor:
        with self._lock:
            if self._executor is None and self.threads:
                self._executor = ThreadPoolExecutor(
                    self.workers, thread_name_prefix="he-agg-encrypt"
                )
            elif self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),  # no forked locks or threads
                    initializer=_start,
                    initargs=(self.public,),
                )
            return self._executor

    def _submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        with _without_main():  # a submit may spawn a worker process
            return self._pool().submit(fn, *args)

    def encrypt(
        self,
        values: F64Array,
        context: wellformed.ProofContext | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[U64Array, tuple[bytes, ...]]:
        """Words (C, 2, L, N) of ``values`` and, with ``context`` (a set with proofs), one
        proof per group; ``progress`` gets ciphertexts as they are finished."""
        params = self.public.params
        if params.proofs and context is None:
            raise ValueError("this parameter set needs a proof context")
        values = np.asarray(values, dtype=np.float64)
        count = blocks(values, params.slots).shape[0]
        if self.workers == 1 or count <= 1:
            return self._encrypt_here(values, context, progress)
        try:
            if self.threads:
                # Updates take turns on the threads: each gets every core and is done (and
                # its upload can go out) in 1/k of the time k sharing them would take, and
                # its disk and network then overlap the next one's encryption.
                with self._turn:
                    return self._encrypt_on_threads(values, count, context, progress)
            return self._encrypt_on_processes(values, count, context, progress)
        except BrokenExecutor as exc:  # a worker died (killed, out of memory): carry on here
            log.warning(
                "encryption pool broken; encrypting in this process", extra={"error": str(exc)}
            )
            self.close()
            return self._encrypt_here(values, context, None)

    def _thread_run(self, count: int) -> int:
        """Ciphertexts per thread task: THREAD_RUN, or fewer so every worker gets one."""
        return max(1, min(THREAD_RUN, -(-count // self.workers)))

    def _encrypt_on_threads(
        self,
        values: F64Array,
        count: int,
        context: wellformed.ProofContext | None,
        progress: Callable[[int], None] | None,
    ) -> tuple[U64Array, tuple[bytes, ...]]:
        params, public = self.public.params, self.public
        width = params.slots
        words = _words(count, params)
        window = 2 * self.workers
        if context is None:
            runs = _runs(0, count, self._thread_run(count))
            calls = ((_part(values, run, width), public) for run in runs)
            for (first, size), part_words in zip(
                runs, _ordered(self._pool(), encrypt_vector, calls, window), strict=True
            ):
                words[first : first + size] = part_words
                if progress is not None:
                    progress(size)
            return words, ()
        key = key_rows(public)
        layout = [
            (group, run)
            for group in wellformed.groups(count)
            for run in _runs(*group, self._thread_run(group[1]))
        ]
        calls = ((_part(values, run, width), public) for _, run in layout)
        proofs: list[bytes] = []
        drawn: list[EncryptionWitness] = []  # the current group's randomness, run by run
        for ((first, size), (start, length)), (part_words, witness) in zip(
            layout, _ordered(self._pool(), encrypt_for_proof, calls, window), strict=True
        ):
            words[start : start + length] = part_words
            drawn.append(witness)
            if start + length == first + size:  # the group's last run: prove the group
                bound = dataclasses.replace(context, first_index=context.first_index + first)
                group = slice(first, first + size)
                proofs.extend(
                    wellformed.prove_upload(words[group], _joined(drawn), key, params, bound)
                )
                drawn.clear()  # dropped once proven
            if progress is not None:
                progress(length)
        return words, tuple(proofs)

    def _encrypt_on_processes(
        self,
        values: F64Array,
        count: int,
        context: wellformed.ProofContext | None,
        progress: Callable[[int], None] | None,
    ) -> tuple[U64Array, tuple[bytes, ...]]:
        width = self.public.params.slots
        # without proofs, runs; with them, one proof group per task, bound to its first index
        tasks = _runs(0, count, RUN) if context is None else wellformed.groups(count)
        futures: list[Future[tuple[U64Array, tuple[bytes, ...]]]] = []
        for first, size in tasks:
            part = _part(values, (first, size), width)
            if context is None:
                futures.append(self._submit(_encrypt_run, part))
            else:
                bound = dataclasses.replace(context, first_index=context.first_index + first)
                futures.append(self._submit(_encrypt_and_prove, part, bound))
        words = _words(count, self.public.params)
        proofs: list[bytes] = []
        for (first, size), future in zip(tasks, futures, strict=True):
            part_words, group_proofs = future.result()
            words[first : first + size] = part_words
            proofs.extend(group_proofs)
            if progress is not None:
                progress(size)
        return words, tuple(proofs)

    def _encrypt_here(
        self,
        values: F64Array,
        context: wellformed.ProofContext | None,
        progress: Callable[[int], None] | None,
    ) -> tuple[U64Array, tuple[bytes, ...]]:
        if context is None:
            return encrypt_vector(values, self.public, progress=progress), ()
        return encrypt_with_proofs(values, self.public, context, progress)


def _runs(first: int, count: int, run: int) -> list[tuple[int, int]]:
    """(first, size) of consecutive runs of ≤ ``run`` ciphertexts covering [first, first+count)."""
    return [(start, min(run, first + count - start)) for start in range(first, first + count, run)]


def _part(values: F64Array, run: tuple[int, int], width: int) -> F64Array:
    first, size = run
    return values[first * width : (first + size) * width]


def _joined(parts: list[EncryptionWitness]) -> EncryptionWitness:
    if len(parts) == 1:
        return parts[0]
    return EncryptionWitness(
        np.concatenate([w.u for w in parts]),
        np.concatenate([w.e0 for w in parts]),
        np.concatenate([w.e1 for w in parts]),
    )


def _words(count: int, params: ParameterSet) -> U64Array:
    return np.empty((count, 2, len(params.data_primes), params.poly_degree), np.uint64)


_shared: list[EncryptionPool] = []
_shared_lock = threading.Lock()


def pool_for(
    public: PublicContext, ciphertexts: int, workers: int | None = None
) -> EncryptionPool | None:
    """This process's pool for ``public`` with ``workers`` threads or processes (default:
    every core; threads where the backend releases the GIL), or None when the update is
    small or one worker is asked for."""
    workers = max(1, workers or default_workers())
    threads = releases_gil(proofs=public.params.proofs)
    minimum = THREAD_MIN_CIPHERTEXTS if threads else POOL_MIN_CIPHERTEXTS
    if workers == 1 or ciphertexts < minimum:
        return None
    with _shared_lock:
        for pool in _shared:
            if pool.workers == workers and pool.threads == threads and pool.serves(public):
                return pool
        pool = EncryptionPool(public, workers, threads=threads)
        _shared.append(pool)
        while len(_shared) > _SHARED_POOLS:
            _shared.pop(0).close()
        return pool


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        while _shared:
            _shared.pop().close()
