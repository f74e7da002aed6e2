"""Durable state: SQLite (WAL, synchronous=FULL) for metadata, fsynced files for blobs.

Blobs are content-addressed: written to a temporary file, fsynced, renamed into place,
and the directory fsynced, all before the caller is told they are stored. Everything a
round needs (its uploads, its aggregate, its shares) can be rebuilt from these two.
The interface is small on purpose so PostgreSQL and S3-style storage can replace it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["BlobStore", "Database"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS federations (
    id TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0, public_key TEXT, decryptions_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS parties (
    federation TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, signing_key TEXT NOT NULL,
    encryption_key TEXT, member_index INTEGER, PRIMARY KEY (federation, name)
);
CREATE INDEX IF NOT EXISTS parties_by_key ON parties (signing_key);
CREATE TABLE IF NOT EXISTS keygen (
    federation TEXT NOT NULL, epoch INTEGER NOT NULL, kind TEXT NOT NULL, sender INTEGER NOT NULL,
    recipient INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (federation, epoch, kind, sender, recipient)
);
CREATE TABLE IF NOT EXISTS rounds (
    federation TEXT NOT NULL, number INTEGER NOT NULL, state TEXT NOT NULL, deadline REAL NOT NULL,
    opened REAL NOT NULL, closed REAL, reason TEXT, manifest TEXT, aggregate TEXT,
    attempt INTEGER NOT NULL DEFAULT 0, decryption_set TEXT, attempt_started REAL,
    unresponsive TEXT NOT NULL DEFAULT '[]', model TEXT, PRIMARY KEY (federation, number)
);
CREATE TABLE IF NOT EXISTS uploads (
    federation TEXT NOT NULL, round INTEGER NOT NULL, client TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, signature TEXT NOT NULL, timestamp INTEGER NOT NULL, nonce TEXT NOT NULL,
    target TEXT NOT NULL, manifest TEXT NOT NULL, received REAL NOT NULL,
    PRIMARY KEY (federation, round, client)
);
CREATE TABLE IF NOT EXISTS shares (
    federation TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL,
    member INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (federation, round, attempt, member)
);
CREATE TABLE IF NOT EXISTS nonces (
    key TEXT NOT NULL, nonce TEXT NOT NULL, seen REAL NOT NULL, PRIMARY KEY (key, nonce)
);
"""


class Database:
    """One SQLite connection behind a lock; ``transaction()`` commits or rolls back as a whole."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute("PRAGMA foreign_keys=ON")
        self._connection.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            outermost = self._depth == 0
            if outermost:
                self._connection.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self._connection
            except BaseException:
                self._depth -= 1
                if outermost:
                    self._connection.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outermost:
                self._connection.execute("COMMIT")

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self.lock:
            row: sqlite3.Row | None = self._connection.execute(sql, args).fetchone()
            return row

    def all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self.lock:
            return list(self._connection.execute(sql, args).fetchall())

    def close(self) -> None:
        with self.lock:
            self._connection.close()


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
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
