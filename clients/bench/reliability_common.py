"""What every part of the torture harness shares: a wire tap on the SDK's uploads, the
server process's memory and files as an outside observer sees them, and small helpers.

The harness observes the server only from outside, as an operator would: over HTTP, from
``/proc/PID/status``, and by reading its SQLite file (read-only queries) and blob folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from clients.harness import LocalFederation, ServerProcess
from clients.participant import Participant
from he_agg.params import ParameterSet
from keys.agent import wait

__all__ = [
    "Figure",
    "InFlight",
    "MemorySampler",
    "ServerFiles",
    "StoredUpload",
    "UploadAttempt",
    "UploadTap",
    "average_bound",
    "percentile",
    "poll",
    "rss_bytes",
    "server_environment",
    "tapped_participant",
    "time_to_ready",
    "weighted_truth",
]

_ENVIRONMENT = threading.Lock()
PROBE_NICE = -20  # the /health probe's priority, where allowed (root): see _probe_health


@dataclass(frozen=True)
class Figure:
    """One line of the published table: what was measured against its target."""

    part: str
    name: str
    value: str
    target: str = ""
    met: bool | None = None  # None: a figure without a target
    # a latency target: judged on the full run (benchmarks/README.md); a smoke run on a
    # shared machine reports it, and its tests do not make it a pass/fail
    timed: bool = False


@contextlib.contextmanager
def server_environment(**variables: str) -> Iterator[None]:
    """Set HE_AGG_* variables for a server process started inside the block (ServerProcess
    hands os.environ to its child); the old values come back afterwards."""
    with _ENVIRONMENT:
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def time_to_ready(
    server: ServerProcess, environment: Mapping[str, str], timeout: float
) -> float | None:
    """Start ``server`` with ``environment`` and return the seconds from the start of its
    process until ``/ready`` answers 200 (the store writable, the disk with room); None if
    the process died first (an armed crash point can fire while it recovers)."""
    started = time.monotonic()
    with server_environment(**environment):
        try:
            server.start()
        except RuntimeError:
            if server.process is not None and server.process.poll() is not None:
                return None  # it died before /health answered
            raise
    process = server.process
    assert process is not None
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() - started < timeout:
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{server.url}/ready").status_code == 200:
                    return time.monotonic() - started
            if process.poll() is not None:
                return None
            time.sleep(0.01)
    raise TimeoutError(f"the server was not ready {timeout:g} s after its restart")


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, in bytes (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), NaN for no values."""
    return float(np.percentile(values, q)) if values else math.nan


class MemorySampler:
    """Samples a process's RSS every ``interval`` seconds (a thread) and, with
    ``health_url``, the latency of GET /health as often, from a process of its own so that
    busy threads of the harness (the GIL) do not add to what it measures; until ``stop``."""

    def __init__(self, pid: int, interval: float = 0.05, health_url: str | None = None) -> None:
        self.pid = pid
        self.interval = interval
        self.rss: list[int] = []
        self.health_ms: list[float] = []
        self.health_failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_rss, daemon=True)
        context = multiprocessing.get_context("fork")  # runs one function: no re-import
        self._stop_probe = context.Event()
        self._results: multiprocessing.Queue[tuple[list[float], int]] = context.Queue()
        self._probe = (
            None
            if health_url is None
            else context.Process(
                target=_probe_health,
                args=(health_url, interval, self._stop_probe, self._results),
                daemon=True,
            )
        )

    def start(self) -> MemorySampler:
        self._thread.start()
        if self._probe is not None:
            self._probe.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._probe is not None:
            self._stop_probe.set()
            self.health_ms, self.health_failures = self._results.get(timeout=60)
            self._probe.join(timeout=30)

    @property
    def peak(self) -> int:
        return max(self.rss, default=0)

    def _sample_rss(self) -> None:
        while not self._stop.is_set():
            self.rss.append(rss_bytes(self.pid))
            self._stop.wait(self.interval)


def _probe_health(
    url: str,
    interval: float,
    stop: Any,
    results: multiprocessing.Queue[tuple[list[float], int]],
) -> None:
    """GET ``url`` every ``interval`` seconds until ``stop`` is set; put (latencies in ms
    of the answers that were 200, number of failures) on ``results``."""
    latencies: list[float] = []
    failures = 0
    # the probe stands for a monitor on another machine: on these 2 cores, at the default
    # priority it waits behind the 200 clients for a core, and that wait (not the server's)
    # was most of the latency it measured; -20 needs root, so it may stay at the default
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, PROBE_NICE)
    with httpx.Client(timeout=30.0) as http:
        while not stop.is_set():
            started = time.monotonic()
            try:
                ok = http.get(url).status_code == 200
            except httpx.TransportError:
                ok = False
            if ok:
                latencies.append((time.monotonic() - started) * 1000)
            else:
                failures += 1
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    results.put((latencies, failures))


class InFlight:
    """How many upload bodies are being sent right now (a thread-safe gauge)."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        with self._lock:
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1


@dataclass(frozen=True)
class UploadAttempt:
    """One PUT of an upload as it left the client: the body's digest and what came back
    (an HTTP status, or the name of the transport error)."""

    round: int
    client: str
    sha256: str
    outcome: int | str


class _PacedBody(httpx.SyncByteStream):
    """A body sent in 16 pieces over ``seconds``: a slow link, so a kill lands mid-body."""

    def __init__(self, body: bytes, seconds: float, gauge: InFlight) -> None:
        self.body = body
        self.seconds = seconds
        self.gauge = gauge

    def __iter__(self) -> Iterator[bytes]:
        piece = max(1, -(-len(self.body) // 16))
        with self.gauge.sending():
            for start in range(0, len(self.body), piece):
                yield self.body[start : start + piece]
                time.sleep(self.seconds / 16)


class UploadTap(httpx.BaseTransport):
    """The SDK's transport with a tap on upload PUTs: it records every attempt's body
    digest and outcome (so a retry's bytes can be compared with the first try's, and 503s
    counted), and, while ``pace`` is set, sends upload bodies slowly."""

    def __init__(self, pace: threading.Event | None = None, pace_seconds: float = 0.4) -> None:
        self._inner = httpx.HTTPTransport()
        self.pace = pace
        self.pace_seconds = pace_seconds
        self.gauge = InFlight()
        self.attempts: list[UploadAttempt] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        if request.method != "PUT" or len(parts) < 8 or parts[-2] != "updates":
            return self._inner.handle_request(request)
        round, client = int(parts[-3]), parts[-1]
        body = request.content
        digest = hashlib.sha256(body).hexdigest()
        if self.pace is not None and self.pace.is_set():
            request.stream = _PacedBody(body, self.pace_seconds, self.gauge)
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError as exc:
            self._record(UploadAttempt(round, client, digest, type(exc).__name__))
            raise
        self._record(UploadAttempt(round, client, digest, response.status_code))
        return response

    def _record(self, attempt: UploadAttempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    def close(self) -> None:
        self._inner.close()


def tapped_participant(
    federation: LocalFederation,
    name: str,
    tap: UploadTap,
    spool: Path,
    backoff: float | None = None,
    retries: int | None = None,
) -> Participant:
    """The SDK's participant for ``name``, its uploads through ``tap`` and spooled under
    ``spool``; ``backoff`` and ``retries`` change the SDK's retries of a failed connection
    (default: the SDK's own)."""
    participant = Participant(
        federation.server.url,
        federation.federation,
        name,
        federation.identities[name].signing,
        verify=federation.verify,
        show_progress=False,
        roster=federation.roster,
        spool_dir=spool / name,
        transport=tap,
    )
    if backoff is not None:
        participant.http.backoff = backoff
    if retries is not None:
        participant.http.retries = retries
    return participant


@dataclass(frozen=True)
class StoredUpload:
    client: str
    sha256: str
    size: int


_COUNTED_TABLES = (
    "federations",
    "epochs",
    "parties",
    "keygen",
    "rounds",
    "uploads",
    "shares",
    "endorsements",
)


@dataclass
class ServerFiles:
    """The server's data folder read from outside: its SQLite file (read-only queries)
    and its content-addressed blob folder (``blobs/<sha[:2]>/<sha>``, scratch in
    ``blobs/incoming/<replica>``)."""

    data_dir: Path
    _connection: sqlite3.Connection | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _text_columns: list[tuple[str, str]] | None = field(default=None, init=False, repr=False)

    @property
    def blob_root(self) -> Path:
        return self.data_dir / "blobs"

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:  # one connection, shared by the harness's threads
            if self._connection is None:
                path = self.data_dir / "he-agg.sqlite3"
                self._connection = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False
                )
            return self._connection.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def round_state(self, federation: str, number: int) -> tuple[str, int, int]:
        """(state, decryption attempt, uploads stored) of a round; ("", 0, 0) if none."""
        rows = self._query(
            "SELECT state, attempt FROM rounds WHERE federation = ? AND number = ?",
            federation,
            number,
        )
        if not rows:
            return "", 0, 0
        return str(rows[0][0]), int(rows[0][1]), len(self.uploads(federation, number))

    def round_reason(self, federation: str, number: int) -> str:
        """Why a round was aborted ("" if it was not, or there is no such round)."""
        rows = self._query(
            "SELECT reason FROM rounds WHERE federation = ? AND number = ?", federation, number
        )
        return str(rows[0][0] or "") if rows else ""

    def uploads(self, federation: str, number: int) -> list[StoredUpload]:
        rows = self._query(
            "SELECT client, sha256, size FROM uploads WHERE federation = ? AND round = ?",
            federation,
            number,
        )
        return [StoredUpload(str(c), str(s), int(n)) for c, s, n in rows]

    def shares(self, federation: str, number: int) -> int:
        """Decryption shares the server holds for a round, over every attempt."""
        rows = self._query(
            "SELECT count(*) FROM shares WHERE federation = ? AND round = ?", federation, number
        )
        return int(rows[0][0])

    def decryptions_used(self, federation: str) -> int:
        rows = self._query(
            "SELECT sum(decryptions_used) FROM epochs WHERE federation = ?", federation
        )
        return int(rows[0][0] or 0)

    def row_counts(self) -> dict[str, int]:
        """Rows in every table a request could add to (not the nonces, which every signed
        request spends by design)."""
        counts = ", ".join(f"(SELECT count(*) FROM {table})" for table in _COUNTED_TABLES)
        values = self._query(f"SELECT {counts}")[0]
        return dict(zip(_COUNTED_TABLES, (int(v) for v in values), strict=True))

    def blob_paths(self) -> frozenset[str]:
        """The blob folder's files (scratch files included), relative to it."""
        return frozenset(
            os.path.relpath(os.path.join(folder, name), self.blob_root)
            for folder, _, files in os.walk(self.blob_root)
            for name in files
        )

    def referenced(self, digest: str) -> bool:
        """Whether any row of any table names ``digest`` (an upload, an aggregate, a model,
        a share, a key): a blob the server keeps on purpose, not an orphan."""
        if self._text_columns is None:
            tables = [
                r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            self._text_columns = [
                (table, column[1])
                for table in tables
                for column in self._query(f"PRAGMA table_info({table})")
                if "CHAR" in str(column[2]).upper() or "TEXT" in str(column[2]).upper()
            ]
        return any(
            self._query(f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1", digest)
            for table, column in self._text_columns
        )

    def blob_matches(self, digest: str) -> bool:
        """The blob named ``digest`` exists and its bytes hash to that name."""
        path = self.blob_root / digest[:2] / digest
        try:
            with open(path, "rb") as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest() == digest
        except FileNotFoundError:
            return False


def weighted_truth(updates: Sequence[tuple[np.ndarray, float]]) -> tuple[np.ndarray, float]:
    """The plaintext FedAvg of (vector, samples) pairs and the total weight."""
    vectors = np.stack([vector for vector, _ in updates]).astype(np.float64)
    weights = np.array([samples for _, samples in updates], dtype=np.float64)
    return np.average(vectors, axis=0, weights=weights), float(weights.sum())


def average_bound(
    params: ParameterSet, threshold: int, truth: np.ndarray, total_weight: float
) -> float:
    """The CKKS error bound on the weighted sum (``ParameterSet.error_bound``) carried
    through the division by Σ n_k (the weight slot carries the same error)."""
    bound = params.error_bound(threshold)
    return float(bound * (1 + np.abs(truth).max()) / (total_weight - bound))


def poll(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """``keys.agent.wait`` with a finer default interval."""
    return wait(condition, timeout, interval)
