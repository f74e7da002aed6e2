"""A throwaway PostgreSQL cluster for tests: initdb in a temporary folder, one per session.

Used by ``tests/store/conftest.py`` (and by service tests through ``tests/conftest.py``).
The cluster trusts every local connection, skips fsync and listens on 127.0.0.1 at a free
port; each test asks for a fresh database, or a fresh schema in a shared one (much faster
to make), so that tests never see each other's rows.

``initdb`` refuses to run as root, so as root the folder is handed to the ``postgres``
user and the binaries run through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

__all__ = [
    "MISSING",
    "SHARED_DATABASE",
    "PostgresCluster",
    "find_binaries",
    "postgres_or_skip",
    "shared_cluster",
]

SHARED_DATABASE = "he_agg_tests"  # holds new_schema_url()'s schemas
MISSING = "PostgreSQL 15 binaries (initdb, pg_ctl) not found: apt-get install postgresql"


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else the newest Debian install."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresCluster:
    """``start()`` a cluster, hand out ``new_database_url()``s, ``stop()`` and delete it."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.root = Path(tempfile.mkdtemp(prefix="he-agg-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._count = 0
        self._lock = threading.Lock()
        self._as_postgres = os.geteuid() == 0
        self._shared_database = False

    def _run(self, *args: str) -> None:
        command = [str(self.binaries / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.port = _free_port()
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        # -l: without a log file the server keeps pg_ctl's output pipe open forever.
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        try:
            if self.port:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin_dsn(self, database: str = "postgres") -> str:
        """A libpq connection string for psycopg itself."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for the given database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _next_name(self) -> str:
        with self._lock:
            self._count += 1
            return f"test_{self._count}"

    def new_database_url(self) -> str:
        """CREATE DATABASE test_<n> and return its SQLAlchemy URL (about 0.3 s each)."""
        name = self._next_name()
        with psycopg.connect(self.admin_dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def new_schema_url(self) -> str:
        """An empty schema test_<n> in one shared database, as the connection's only
        search_path: as good as a fresh database for unqualified names, and ~100x faster."""
        name = self._next_name()
        with self._lock:
            if not self._shared_database:
                with psycopg.connect(self.admin_dsn(), autocommit=True) as connection:
                    connection.execute(f'CREATE DATABASE "{SHARED_DATABASE}"')
                self._shared_database = True
        with psycopg.connect(self.admin_dsn(SHARED_DATABASE), autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url(SHARED_DATABASE)}?options=-csearch_path%3D{name}"


def postgres_or_skip() -> Path:
    """The binaries' folder; without them, fail on CI and skip elsewhere."""
    binaries = find_binaries()
    if binaries is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return binaries


class _Shared:
    lock = threading.Lock()
    cluster: PostgresCluster | None = None
    users = 0


@contextmanager
def shared_cluster() -> Iterator[PostgresCluster]:
    """The process's one cluster: started by its first user, stopped when the last leaves.

    Session fixtures in several conftest files (tests/ and tests/store/) can each enter
    this and still share a single cluster.
    """
    binaries = postgres_or_skip()
    with _Shared.lock:
        if _Shared.cluster is None:
            cluster = PostgresCluster(binaries)
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            _Shared.cluster = cluster
        _Shared.users += 1
        cluster = _Shared.cluster
    try:
        yield cluster
    finally:
        with _Shared.lock:
            _Shared.users -= 1
            if _Shared.users == 0:
                _Shared.cluster = None
                cluster.stop()
