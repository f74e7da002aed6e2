"""Blobs as content-addressed files, fsynced before anyone is told they are stored.

Each blob is written to a temporary file, fsynced, renamed into place, and the directory
fsynced. Everything a round needs (uploads, aggregate, shares, model) is a blob, so the
metadata store and this folder together can rebuild any round.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["FileBlobStore"]


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore:
    """Content-addressed files: ``<root>/<sha[:2]>/<sha>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scratch = root / "incoming"
        self.scratch.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def temporary(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.scratch, prefix="blob-")
        return fd, Path(name)

    def commit_file(self, temporary: Path, digest: str) -> None:
        """Move a fully written, fsynced temporary file to its content address, durably."""
        target = self.path(digest)
        target.parent.mkdir(exist_ok=True)
        os.replace(temporary, target)
        _fsync_directory(target.parent)
        _fsync_directory(self.root)

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.exists(digest):
            return digest
        fd, temporary = self.temporary()
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self.commit_file(temporary, digest)
        finally:
            if temporary.exists():
                temporary.unlink()
        return digest

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def clean_scratch(self) -> None:
        """Unacknowledged partial uploads left by a crash."""
        for leftover in self.scratch.iterdir():
            leftover.unlink(missing_ok=True)
