"""Blobs as content-addressed files, fsynced before anyone is told they are stored.

Each blob is written to a temporary file, fsynced, renamed into place, and the directory
fsynced. Everything a round needs (uploads, aggregate, shares, model) is a blob, so the
metadata store and this folder together can rebuild any round.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["FileBlobStore", "FileBytes"]


class FileBytes:
    """A file read on demand: ``len()`` and slices (``os.pread``), so an envelope is
    validated a window at a time without mapping the file (whose pages would count in the
    server's resident memory) or reading it whole."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: slice, /) -> bytes:
        start, stop, step = index.indices(self.size)
        if step != 1:
            raise ValueError("FileBytes reads contiguous slices only")
        wanted = max(0, stop - start)
        data = os.pread(self.fd, wanted, start)
        if len(data) != wanted:
            raise OSError(f"short read: {len(data)} of {wanted} bytes")
        return data


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore:
    """Content-addressed files: ``<root>/<sha[:2]>/<sha>``."""

    def __init__(self, root: Path, replica: str = "main") -> None:
        """``replica``: this process's name among those sharing ``root`` (each writes its
        partial uploads under ``incoming/<replica>``, and cleans only its own at start)."""
        self.root = root
        self.incoming = root / "incoming"
        self.scratch = self.incoming / replica
        self.scratch.mkdir(parents=True, exist_ok=True)
        # held while a blob is committed and while the collector removes one: a blob the
        # collector judged stale is never the one a commit has just found (and touched)
        self._guard = threading.Lock()
        self._live: set[Path] = set()  # scratch files of requests in progress

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def temporary(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.scratch, prefix="blob-")
        with self._guard:
            self._live.add(Path(name))
        return fd, Path(name)

    def discard(self, temporary: Path) -> None:
        """The request that owned a scratch file is over: remove what is left of it."""
        with self._guard:
            self._live.discard(temporary)
        temporary.unlink(missing_ok=True)

    def commit_file(self, temporary: Path, digest: str) -> None:
        """Move a fully written, fsynced temporary file to its content address, durably.
        If the blob is there already (the same bytes), it is kept and touched instead."""
        target = self.path(digest)
        with self._guard:
            if self._touch_locked(target):
                return
            target.parent.mkdir(exist_ok=True)
            os.replace(temporary, target)
            _fsync_directory(target.parent)
            _fsync_directory(self.root)

    def _touch(self, digest: str) -> bool:
        with self._guard:
            return self._touch_locked(self.path(digest))

    @staticmethod
    def _touch_locked(target: Path) -> bool:
        """Whether the blob exists; if so its time is made fresh, so the collector, which
        removes only blobs untouched for a while, leaves one just referenced again."""
        try:
            os.utime(target)
        except FileNotFoundError:
            return False
        return True

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self._touch(digest):
            return digest
        fd, temporary = self.temporary()
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self.commit_file(temporary, digest)
        finally:
            self.discard(temporary)
        return digest

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def clean_scratch(self, older_than: float | None = None) -> int:
        """Remove scratch files no request in this process owns (partial uploads left by
        a crash or a lost request), modified before ``older_than`` if given; with it, other
        replicas' scratch files older than that too (a replica that died). How many."""
        removed = 0
        folders = [self.scratch, self.incoming]  # incoming itself: an older layout's files
        if older_than is not None:
            folders += [f for f in self.incoming.iterdir() if f.is_dir() and f != self.scratch]
        for folder in folders:
            for leftover in folder.iterdir():
                with self._guard:
                    if leftover in self._live or leftover.is_dir():
                        continue
                try:
                    if older_than is not None and leftover.stat().st_mtime >= older_than:
                        continue
                    leftover.unlink()
                except FileNotFoundError:
                    continue
                removed += 1
        return removed

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest."""
        for folder in self.root.iterdir():
            if folder.is_dir() and folder != self.incoming and len(folder.name) == 2:
                for blob in folder.iterdir():
                    if len(blob.name) == 64 and blob.name.startswith(folder.name):
                        yield blob.name

    def remove_if_stale(self, digest: str, older_than: float, unused: Callable[[], bool]) -> bool:
        """Remove a blob last touched before ``older_than`` if ``unused()`` still says so,
        checked under the commit guard; whether it was removed."""
        with self._guard:
            try:
                if self.path(digest).stat().st_mtime >= older_than or not unused():
                    return False
            except FileNotFoundError:
                return False
            self.path(digest).unlink(missing_ok=True)
            return True
