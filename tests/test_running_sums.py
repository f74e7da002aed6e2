"""The server's running sums, windowed envelope reading, and the garbage collector.

Uploads are read a window of ciphertexts at a time (``EnvelopeView``, from a file with
``FileBytes``) and added to their round's running sum as they are stored; the close's
sum must equal the whole-envelope reference sum bit for bit, however it was made (as
uploads arrived, or rebuilt from the blobs after a restart)."""

from __future__ import annotations

import dataclasses
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from he_agg.aggregate import RunningSum, aggregate_uploads
from he_agg.envelope import EnvelopeView, Upload, decode_upload, encode_upload
from he_agg.errors import SizeError, WordRangeError
from he_agg.params import derive_parameters
from he_agg.server.collector import collect
from he_agg.server.store import FileBlobStore, FileBytes, UploadRow, open_store
from he_agg.server.sums import RoundSums, window_size
from tests.helpers import random_words

P = derive_parameters("sums-test", proofs=False)
COUNT = 5


def _blob(client: str, seed: int, count: int = COUNT) -> bytes:
    words = random_words(P.data_primes, (count, 2), P.poly_degree, seed)
    return encode_upload(Upload("f", 1, client, P.scale, words), P)


def _row(client: str, digest: str) -> UploadRow:
    return UploadRow(
        federation="f",
        round=1,
        client=client,
        sha256=digest,
        size=0,
        signature="",
        timestamp=0,
        nonce="",
        target="",
        manifest="",
        received=0.0,
    )


def test_windows_equal_the_whole_decode_and_check_every_word(tmp_path: Path) -> None:
    blob = _blob("c0", 1)
    whole = decode_upload(blob, P).words
    path = tmp_path / "u"
    path.write_bytes(blob)
    with open(path, "rb") as handle:
        view = EnvelopeView.parse(FileBytes(handle.fileno()), P, client="c0")
        for size in (1, 2, COUNT):
            parts = [w for _, w in view.windows(size)]
            assert np.array_equal(np.concatenate(parts), whole)
    # a word at or above its prime in the last ciphertext is found by the window holding it
    words = whole.copy()
    words[-1, 1, 0, 7] = P.data_primes[0]
    bad = encode_upload(Upload("f", 1, "c0", P.scale, words), P)
    view = EnvelopeView.parse(bad, P)
    assert np.array_equal(view.words(0, COUNT - 1), whole[:-1])  # earlier windows are fine
    with pytest.raises(WordRangeError):
        view.words(COUNT - 1, 1)
    with pytest.raises(SizeError):
        EnvelopeView.parse(blob[:-1], P)


def test_reading_by_windows_holds_one_window_not_the_upload(tmp_path: Path) -> None:
    count = 40
    path = tmp_path / "big"
    path.write_bytes(_blob("c0", 2, count))
    whole_bytes = count * 2 * len(P.data_primes) * P.poly_degree * 8
    with open(path, "rb") as handle:
        view = EnvelopeView.parse(FileBytes(handle.fileno()), P)
        tracemalloc.start()
        for _ in view.windows(2):
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < whole_bytes / 4  # a window of 2 of 40 ciphertexts, with its temporaries


def test_running_sum_equals_the_reference_however_it_was_made(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    bodies = {f"c{i}": _blob(f"c{i}", 10 + i) for i in range(4)}
    rows = [_row(client, blobs.put(body)) for client, body in bodies.items()]
    reference = aggregate_uploads(bodies.values(), P)
    key = ("f", 1)

    sums = RoundSums(blobs)
    for row in rows[:3]:
        sums.add(key, P, row)
    sums.add(key, P, rows[0])  # a client already added is not added twice
    total, included = sums.total(key, P, rows)  # the close adds the one it lacks
    assert np.array_equal(total, reference)
    assert included == {row.client: row.sha256 for row in rows}

    restarted = RoundSums(blobs)  # after a restart: rebuilt from the blobs
    total, included = restarted.total(key, P, rows)
    assert np.array_equal(total, reference) and len(included) == 4

    sums.keep_only(set())  # the round is no longer open: its sum is forgotten
    total, _ = sums.total(key, P, rows[:2])
    assert np.array_equal(total, aggregate_uploads([bodies["c0"], bodies["c1"]], P))


def test_windowed_adds_respect_the_lazy_reduction_budget() -> None:
    words = [random_words(P.data_primes, (3, 2), P.poly_degree, s) for s in range(7)]
    running = RunningSum(P, 3)
    running._budget = 2
    for w in words:
        running.add_windows([(0, w[:1]), (1, w[1:])])
    primes = np.array(P.data_primes, dtype=object).reshape(1, 1, -1, 1)
    exact = (sum(w.astype(object) for w in words) % primes).astype(np.uint64)
    assert np.array_equal(running.result(), exact)
    assert window_size(P) >= 1


def test_the_collector_removes_only_old_orphans_and_stray_scratch(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    blobs = FileBlobStore(tmp_path / "blobs")
    old = time.time() - 7200
    orphan = blobs.put(b"orphan: committed before its row, which never came")
    young = blobs.put(b"young orphan: its row may still be on the way")
    os.utime(blobs.path(orphan), (old, old))
    fd, stray = blobs.temporary()  # a request that is gone, leaving its scratch file
    os.close(fd)
    blobs._live.discard(stray)
    os.utime(stray, (old, old))
    fd, live = blobs.temporary()  # a request still in progress
    os.close(fd)
    os.utime(live, (old, old))
    try:
        done = collect(store, blobs, time.time(), grace=3600)
        assert (done.blobs, done.scratch) == (1, 1)
        assert not blobs.exists(orphan) and blobs.exists(young)
        assert not stray.exists() and live.exists()
        # a blob committed again (the same bytes) is fresh, so it survives the next pass
        again = blobs.put(b"young orphan: its row may still be on the way")
        assert again == young and collect(store, blobs, time.time(), 3600).blobs == 0
    finally:
        blobs.discard(live)
        store.close()


class _CountingBlobs(FileBlobStore):
    """A blob store that counts the uploads read through ``path`` (the sums' only reads)."""

    def __init__(self, root: Path, replica: str) -> None:
        super().__init__(root, replica)
        self.reads: list[str] = []

    def path(self, digest: str) -> Path:
        self.reads.append(digest)
        return super().path(digest)


def _replica(root: Path, name: str) -> tuple[RoundSums, _CountingBlobs]:
    from he_agg.server.partials import PartialFolder

    blobs = _CountingBlobs(root, name)
    return RoundSums(blobs, PartialFolder(root / "partials", name)), blobs


def test_replicas_add_each_others_partial_sums_and_only_trustworthy_ones(tmp_path: Path) -> None:
    """Tree aggregation: three replicas share a blob folder; each sums the uploads it
    stored and shares its partial; the closing replica adds the others' partials instead
    of re-reading their uploads, and the result is the reference sum bit for bit. A
    partial is ignored, and its uploads read from their blobs, when it is damaged, names
    an upload the round does not hold (or with another sha256), or overlaps the sum."""
    root = tmp_path / "blobs"
    replicas = {name: _replica(root, name) for name in ("a", "b", "c")}
    bodies = {f"c{i}": _blob(f"c{i}", 30 + i) for i in range(6)}
    rows = [_row(client, replicas["a"][0].blobs.put(body)) for client, body in bodies.items()]
    reference = aggregate_uploads(bodies.values(), P)
    key = ("f", 1)
    for i, row in enumerate(rows):  # round-robin: a holds c0, c3; b c1, c4; c c2, c5
        replicas["abc"[i % 3]][0].add(key, P, row)
    assert [sums.share() for sums, _ in replicas.values()] == [1, 1, 1]
    assert [sums.share() for sums, _ in replicas.values()] == [0, 0, 0]  # unchanged

    closer, reads = replicas["a"]
    reads.reads.clear()
    total, included = closer.total(key, P, rows)
    assert np.array_equal(total, reference)
    assert included == {row.client: row.sha256 for row in rows}
    assert closer.merged == 2 and reads.reads == []  # no upload was read again

    def close(name: str, round_rows: list[UploadRow]) -> tuple[np.ndarray, int, int]:
        sums, blobs = _replica(root, name)  # a replica that holds nothing itself
        total, _ = sums.total(key, P, round_rows)
        return total, sums.merged, len(blobs.reads)

    partial_b = root / "partials" / "f" / "1" / "b.sum"
    good = partial_b.read_bytes()
    partial_b.write_bytes(good[:-8] + bytes(8))  # damaged: its words miss their sha256
    total, merged, read = close("d", rows)
    assert np.array_equal(total, reference) and (merged, read) == (2, 2)  # b's 2 re-read
    partial_b.write_bytes(good)

    # the round, as the closer sees it, holds c1 with c0's bytes and no c0: a's partial
    # (c0 is not the round's) and b's (c1 has another sha256) are not used
    swapped = [dataclasses.replace(rows[1], sha256=rows[0].sha256), *rows[2:]]
    total, merged, read = close("e", swapped)
    assert (merged, read) == (1, 3)  # c's partial; c1 (as c0's bytes), c3, c4 from blobs
    expected = [bodies["c0"], bodies["c2"], bodies["c3"], bodies["c4"], bodies["c5"]]
    assert np.array_equal(total, aggregate_uploads(expected, P))

    # overlap: a sum that already holds c1 (say a retry stored through it) adds c's
    # partial but not b's (c1, c4), whose c4 it reads from the blob
    sums, blobs = _replica(root, "f")
    sums.add(key, P, rows[1])
    blobs.reads.clear()
    total, _ = sums.total(key, P, rows)
    assert np.array_equal(total, reference)
    assert sums.merged == 2 and len(blobs.reads) == 1  # a's and c's; c4 read

    closer.drop(key)  # the round closed: every replica's partial goes
    assert not (root / "partials" / "f" / "1").exists()


def test_a_partial_written_after_the_close_is_cleaned_up_with_its_folder(tmp_path: Path) -> None:
    """A replica whose clock writes its partial just after the closer removed the round's
    folder recreates it; once that replica sees the round closed it removes its partial,
    and the folder with it when no other replica's partial is left in it."""
    root = tmp_path / "blobs"
    (a, _), (b, _), (c, _) = (_replica(root, name) for name in ("a", "b", "c"))
    key = ("f", 1)
    folder = root / "partials" / "f" / "1"
    row = _row("c0", a.blobs.put(_blob("c0", 40)))
    b.add(key, P, row)
    a.drop(key)  # the closer removes the round's partials …
    assert not folder.exists()
    assert b.share() == 1  # … and b's clock writes its partial just after
    assert (folder / "b.sum").exists()
    c.add(key, P, _row("c1", a.blobs.put(_blob("c1", 41))))
    assert c.share() == 1
    b.keep_only(set())  # b sees the round closed: its partial goes, c's stays
    assert [p.name for p in folder.iterdir()] == ["c.sum"]
    c.keep_only(set())  # the last one out removes the folder
    assert not folder.exists()


def test_a_partial_being_written_when_the_round_closes_does_not_outlive_the_close(
    tmp_path: Path,
) -> None:
    """The closer's own clock may be writing its partial when the close drops the round:
    the close waits for that write and then removes the folder, so nothing written before
    it returns outlives it, and no write starts after (the race a loaded machine opened)."""
    import threading

    root = tmp_path / "blobs"
    sums, _ = _replica(root, "a")
    assert sums.shared is not None
    key, folder = ("f", 1), root / "partials" / "f" / "1"
    sums.add(key, P, _row("c0", sums.blobs.put(_blob("c0", 50))))
    entered, release = threading.Event(), threading.Event()
    write = sums.shared.write

    def slow_write(*args: object, **kwargs: object) -> None:
        entered.set()
        assert release.wait(60)
        write(*args, **kwargs)  # type: ignore[arg-type]

    sums.shared.write = slow_write  # type: ignore[method-assign]
    sharing = threading.Thread(target=sums.share)
    sharing.start()
    assert entered.wait(60)  # the partial's write is in flight
    closing = threading.Thread(target=sums.drop, args=(key,))
    closing.start()
    closing.join(0.2)
    assert closing.is_alive()  # the close waits for the write in flight …
    release.set()
    sharing.join(60)
    closing.join(60)
    assert not sharing.is_alive() and not closing.is_alive()
    assert not folder.exists()  # … and then removes what it wrote
    assert sums.share() == 0 and not folder.exists()  # a closed sum is never written again


def test_an_add_that_fails_halfway_leaves_no_partly_added_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload is added a window at a time; if a read fails after some windows went in
    (an I/O error, say), the sum is emptied, not left holding part of it, and the close
    adds everything from the blobs: the aggregate is still exactly the reference, in the
    running add and in the close alike."""
    import he_agg.server.sums as sums_module

    blobs = FileBlobStore(tmp_path / "blobs")
    bodies = {f"c{i}": _blob(f"c{i}", 60 + i) for i in range(3)}
    rows = [_row(client, blobs.put(body)) for client, body in bodies.items()]
    reference = aggregate_uploads(bodies.values(), P)
    key = ("f", 1)
    monkeypatch.setattr(sums_module, "window_size", lambda params: 1)  # a window each

    class FailingLater(FileBytes):
        """Reads the header and the first windows, then fails."""

        def __init__(self, fd: int) -> None:
            super().__init__(fd)
            self.reads = 0

        def __getitem__(self, index: slice, /) -> bytes:
            self.reads += 1
            if self.reads > 3:  # the header, then two windows' regions
                raise OSError("an I/O error halfway through the upload")
            return super().__getitem__(index)

    sums = RoundSums(blobs)
    sums.add(key, P, rows[0])
    monkeypatch.setattr(sums_module, "FileBytes", FailingLater)
    sums.add(key, P, rows[1])  # fails halfway: logged, and left to the close
    with pytest.raises(OSError):
        sums.total(key, P, rows)  # the close meets the same error: it fails, and retries
    monkeypatch.setattr(sums_module, "FileBytes", FileBytes)
    total, included = sums.total(key, P, rows)
    assert np.array_equal(total, reference)
    assert included == {row.client: row.sha256 for row in rows}
