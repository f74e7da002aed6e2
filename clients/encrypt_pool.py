"""Encrypting one update on every core: a pool of processes, since SEAL holds the GIL.

Without proofs, the update's blocks are cut into runs of ciphertexts and each worker
encodes and encrypts a run (the default backend). With proofs, each task is one proof
group (≤ PROOF_GROUP ciphertexts): the worker encodes and encrypts the group's blocks
(:func:`he_agg.rlwe.encrypt_words`, fresh CSPRNG randomness drawn in the worker) and
proves them at once, so the randomness never leaves the worker and only words and proofs
cross the pipe (a lone group too: the simulation's clients share one pool). The output is
what one process would produce (the same layout, each group's proof bound to its first
index), so nothing downstream knows how many cores made it.

Workers are spawned (no fork: a client may have threads, and SEAL a global mutex) without
the caller's ``__main__``: multiprocessing would otherwise run a user's script again in
every worker, or refuse to start from one without an ``if __name__ == "__main__"`` guard;
the workers need only this module. They hold the public context they were started with.
:class:`EncryptionPool` starts them lazily; :func:`pool_for` shares one pool per key among
every client in a process (a simulation's, say) and keeps it for the next round, so the
cores are shared, not multiplied. Updates smaller than ``POOL_MIN_CIPHERTEXTS`` are
encrypted in the caller's process, where a pool would cost more than it saves. Memory:
each worker holds one run (``RUN`` ciphertexts) or one proof group at a time.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from typing import TypeVar

import numpy as np

from he_agg import wellformed
from he_agg.backend import encrypt_vector
from he_agg.backend.proven import encrypt_with_proofs
from he_agg.encoding import blocks
from he_agg.modarith import F64Array, U64Array
from he_agg.public import PublicContext

__all__ = ["POOL_MIN_CIPHERTEXTS", "EncryptionPool", "default_workers", "pool_for"]

T = TypeVar("T")
RUN = 32  # ciphertexts per task: enough to amortise a task, small enough to share out
POOL_MIN_CIPHERTEXTS = 64  # below this (about 500k parameters at N = 8192), no pool
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


class EncryptionPool:
    """``workers`` processes encrypting under one public context (1: in this process)."""

    def __init__(self, public: PublicContext, workers: int | None = None) -> None:
        self.public = public
        self.workers = max(1, workers or default_workers())
        self._executor: Executor | None = None

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
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),  # no forked locks or threads
                initializer=_start,
                initargs=(self.public,),
            )
        return self._executor

    def _submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        with _without_main():  # a submit may spawn a worker
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
            return self._encrypt_on_workers(values, count, context, progress)
        except BrokenExecutor as exc:  # a worker died (killed, out of memory): carry on here
            log.warning(
                "encryption pool broken; encrypting in this process", extra={"error": str(exc)}
            )
            self.close()
            return self._encrypt_here(values, context, None)

    def _encrypt_on_workers(
        self,
        values: F64Array,
        count: int,
        context: wellformed.ProofContext | None,
        progress: Callable[[int], None] | None,
    ) -> tuple[U64Array, tuple[bytes, ...]]:
        params = self.public.params
        width = params.slots
        if context is None:
            tasks = [(first, min(RUN, count - first)) for first in range(0, count, RUN)]
        else:  # one proof group per task, bound to its first index
            tasks = wellformed.groups(count)
        futures: list[Future[tuple[U64Array, tuple[bytes, ...]]]] = []
        for first, size in tasks:
            part = values[first * width : (first + size) * width]
            if context is None:
                futures.append(self._submit(_encrypt_run, part))
            else:
                bound = dataclasses.replace(context, first_index=context.first_index + first)
                futures.append(self._submit(_encrypt_and_prove, part, bound))
        words = np.empty((count, 2, len(params.data_primes), params.poly_degree), np.uint64)
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


_shared: list[EncryptionPool] = []
_shared_lock = threading.Lock()


def pool_for(
    public: PublicContext, ciphertexts: int, workers: int | None = None
) -> EncryptionPool | None:
    """This process's pool for ``public`` with ``workers`` processes (default: every
    core), or None when the update is small or one worker is asked for."""
    workers = max(1, workers or default_workers())
    if workers == 1 or ciphertexts < POOL_MIN_CIPHERTEXTS:
        return None
    with _shared_lock:
        for pool in _shared:
            if pool.workers == workers and pool.serves(public):
                return pool
        pool = EncryptionPool(public, workers)
        _shared.append(pool)
        while len(_shared) > _SHARED_POOLS:
            _shared.pop(0).close()
        return pool


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        while _shared:
            _shared.pop().close()
