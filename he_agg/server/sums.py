"""Running sums: each open round's stored uploads, added as they are stored.

An upload is added right after its row commits, a window of ciphertexts at a time (read
from its blob a window at a time), so closing a round finds the sum already made and only writes
it out: no request waits on aggregation, and the close's cost does not grow with the
number of uploads. The sums live in this process's memory, one per open round (the size
of one upload's words); they are not durable on purpose: after a restart, or if an add
failed, the close adds whatever its sum lacks from the stored blobs, so the aggregate is
always exactly Σ of the committed uploads it names.

Replicas (tree aggregation): with a :class:`~he_agg.server.partials.PartialFolder`, each
replica writes its sums there as they change (:meth:`RoundSums.share`, from the clock) and
the close adds the other replicas' partials before reading the blobs of the uploads no
partial holds (:mod:`he_agg.server.partials` says which partials it accepts).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from he_agg.aggregate import RunningSum
from he_agg.envelope import EnvelopeView
from he_agg.errors import MismatchError
from he_agg.modarith import U64Array
from he_agg.params import ParameterSet
from he_agg.server import metrics
from he_agg.server.partials import PartialFolder
from he_agg.server.store import BlobStore, FileBytes, UploadRow

__all__ = ["RoundSums", "window_size"]

log = logging.getLogger("he_agg.rounds")

WINDOW_BYTES = 8 << 20  # words unpacked at a time, per upload being validated or added


def window_size(params: ParameterSet) -> int:
    """Ciphertexts per window: about WINDOW_BYTES of words, at least one."""
    per_ciphertext = 2 * len(params.data_primes) * params.poly_degree * 8
    return max(1, WINDOW_BYTES // per_ciphertext)


@dataclass
class _Partial:
    running: RunningSum | None = None
    included: dict[str, str] = field(default_factory=dict)  # client → sha256
    lock: threading.Lock = field(default_factory=threading.Lock)
    params: ParameterSet | None = None
    shared: int = 0  # how many uploads the last partial this replica wrote held
    # held while this replica's partial is written: a close (drop) or keep_only takes it to
    # mark the sum closed, so no write in flight lands after the round's folder is removed
    writing: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False


Key = tuple[str, int]  # (federation, round)


def _forget(partial: _Partial) -> None:
    """Empty a sum that an add left partly done (an upload's windows are added one after
    another, and a read or a check may fail between them): what it held is added again
    from the blobs (or the other replicas' partials) when the round closes. Called with
    ``partial.lock`` held."""
    partial.running, partial.included, partial.shared = None, {}, 0


class RoundSums:
    def __init__(self, blobs: BlobStore, shared: PartialFolder | None = None) -> None:
        self.blobs = blobs
        self.shared = shared
        self.merged = 0  # other replicas' partials added by closes (for tests and metrics)
        self._partials: dict[Key, _Partial] = {}
        self._lock = threading.Lock()

    def _partial(self, key: Key) -> _Partial:
        with self._lock:
            return self._partials.setdefault(key, _Partial())

    def add(self, key: Key, params: ParameterSet, upload: UploadRow) -> None:
        """Add a committed upload (once; a client already added is skipped). A failure is
        logged and left to the close, which adds what is missing from the blobs."""
        partial = self._partial(key)
        with partial.lock:
            try:
                self._add_locked(partial, params, upload)
            except Exception:  # the upload is stored: the close adds it from its blob
                log.exception("running sum: adding an upload failed; the close will add it")
                _forget(partial)

    def _add_locked(self, partial: _Partial, params: ParameterSet, upload: UploadRow) -> None:
        if upload.client in partial.included:
            return
        partial.params = params
        with open(self.blobs.path(upload.sha256), "rb") as handle:
            view = EnvelopeView.parse(FileBytes(handle.fileno()), params)
            if partial.running is None:
                partial.running = RunningSum(params, view.count)
            partial.running.add_envelope(view, window_size(params))
        partial.included[upload.client] = upload.sha256

    def total(
        self, key: Key, params: ParameterSet, uploads: Iterable[UploadRow]
    ) -> tuple[U64Array, dict[str, str]]:
        """Σ of ``uploads`` and whatever else was added meanwhile, and what it includes
        (client → sha256): the caller checks that against the committed uploads."""
        partial = self._partial(key)
        uploads = list(uploads)
        with partial.lock:
            try:
                self._merge_others(key, partial, params, uploads)
                for upload in uploads:
                    self._add_locked(partial, params, upload)  # after a restart: all of them
            except BaseException:  # the next close starts again from the blobs
                _forget(partial)
                raise
            assert partial.running is not None, "a round with uploads has a sum"
            return partial.running.result(), dict(partial.included)

    def _merge_others(
        self, key: Key, partial: _Partial, params: ParameterSet, uploads: list[UploadRow]
    ) -> None:
        """Add the other replicas' partials that hold only committed uploads (same sha256)
        and none this sum holds already."""
        if self.shared is None:
            return
        committed = {u.client: u.sha256 for u in uploads}
        for other in self.shared.others(*key, params):
            held = other.included.items()
            if not held or any(committed.get(c) != sha or c in partial.included for c, sha in held):
                continue  # stale, not this round's uploads, or overlapping: use the blobs
            if partial.running is None:
                partial.running = RunningSum(params, other.words.shape[0])
            try:
                partial.running.add(other.words)
            except MismatchError:
                continue
            partial.included.update(other.included)
            self.merged += 1
            metrics.PARTIALS_MERGED.inc()

    def share(self) -> int:
        """Write each sum that changed since its last partial into the shared folder (the
        clock calls this every ``partial_seconds``); how many were written."""
        if self.shared is None:
            return 0
        with self._lock:
            items = list(self._partials.items())
        written = 0
        for (federation, number), partial in items:
            with partial.writing:  # adds go on meanwhile (they take partial.lock only)
                with partial.lock:
                    if partial.closed or partial.running is None or partial.params is None:
                        continue
                    if len(partial.included) == partial.shared:
                        continue
                    words, included = partial.running.result(), dict(partial.included)
                    params = partial.params
                try:
                    self.shared.write(federation, number, params, included, words)
                except OSError:
                    log.exception("could not write this replica's partial sum")
                    continue
                with partial.lock:
                    partial.shared = len(included)
            written += 1
        return written

    def _close(self, keys: Iterable[Key]) -> None:
        """Forget these sums, after any write of their partials in flight has landed (so
        that removing their partials next removes it too) and none can start."""
        with self._lock:
            gone = [self._partials.pop(key) for key in keys if key in self._partials]
        for partial in gone:
            with partial.writing:
                partial.closed = True

    def drop(self, key: Key) -> None:
        """The round is closed: forget its sum, and the partials of every replica."""
        self._close([key])
        if self.shared is not None:
            self.shared.remove_round(*key)

    def keep_only(self, keys: set[Key]) -> None:
        """Forget every sum but those of ``keys`` (the open rounds), and this replica's
        partials of the others."""
        with self._lock:
            gone = set(self._partials) - keys
        self._close(gone)
        if self.shared is not None:
            for key in gone:
                self.shared.remove_own(*key)
