"""Part 3 of the torture harness: many clients with large uploads at once, about twice
what the server admits.

The server's admission caps (``HE_AGG_MAX_INFLIGHT_UPLOAD_BYTES`` and
``HE_AGG_MAX_INFLIGHT_UPLOADS``) are set to ``admitted_share`` of the offered load, so the
rest is refused with 503 + Retry-After before its body is read and the SDK backs off and
comes back. Every upload is encrypted beforehand by a process pool straight into its
client's SDK spool, so the timed load is the SDK sending spooled bytes, as after a client
restart. The federation enrols one client more than upload, so the round stays open and
the figures are the uploads' alone. Measured: every client gets in, nothing is lost or
stored twice, the server's RSS (sampled every 50 ms), the latency of GET /health
(sampled every 50 ms), throughput and the 503s the clients were given.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clients.bench.reliability_common import (
    PROBE_NICE,
    Figure,
    MemorySampler,
    ServerFiles,
    UploadTap,
    percentile,
    rss_bytes,
    server_environment,
    tapped_participant,
)
from clients.harness import LocalFederation
from clients.participant import Participant
from clients.spool import UploadSpool, update_digest
from clients.upload import prepare_upload
from he_agg.envelope import expected_size
from he_agg.errors import HeAggError
from he_agg.params import ParameterSet, derive_parameters
from he_agg.public import PublicContext

__all__ = ["LoadConfig", "LoadFigures", "run_load"]

_FEDERATION = "load"
_MB = 1e6
_MiB = 1 << 20


@dataclass(frozen=True)
class LoadConfig:
    clients: int = 200
    upload_mb: float = 16.0  # each client's envelope, in MB (10^6 bytes)
    admitted_share: float = 0.5  # the caps admit this share of the offered load at once
    retry_after: float = 2.0  # what the server's 503s ask clients to wait (its default)
    settle_s: float = 2.0  # "RSS after the load" is read this long after the last ack
    seed: int = 0


@dataclass(frozen=True)
class LoadFigures:
    clients: int
    upload_bytes: int  # one client's envelope
    cap_bytes: int
    cap_uploads: int
    acknowledged: int
    never_acknowledged: int
    lost: int
    duplicated: int
    corrupted: int
    busy_answers: int  # 503s the clients got
    dropped_connections: int  # attempts without an answer
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float  # settle_s after the last acknowledgement
    health_p95_ms: float
    health_max_ms: float
    health_samples: int
    health_failures: int
    throughput_mb_s: float
    load_s: float
    upload_p95_s: float  # from the start of the load to a client's acknowledgement
    upload_max_s: float
    encrypt_s: float

    def figures(self) -> list[Figure]:
        every = self.never_acknowledged == 0 and self.acknowledged == self.clients
        return [
            Figure(
                "load",
                "clients × upload",
                f"{self.clients} × {self.upload_bytes / _MB:.2f} MB, caps "
                f"{self.cap_bytes / _MB:.0f} MB / {self.cap_uploads} uploads at once",
            ),
            Figure(
                "load",
                "clients that got in",
                f"{self.acknowledged} of {self.clients}",
                "all",
                every,
            ),
            Figure(
                "load",
                "uploads lost / duplicated / corrupted",
                f"{self.lost} / {self.duplicated} / {self.corrupted}",
                "0 / 0 / 0",
                self.lost == 0 and self.duplicated == 0 and self.corrupted == 0,
            ),
            Figure(
                "load",
                "peak server RSS",
                f"{self.rss_peak_mb:.0f} MB (before {self.rss_before_mb:.0f} MB)",
                "≤ 1.5 GB",
                self.rss_peak_mb <= 1536,
            ),
            Figure("load", "server RSS after the load", f"{self.rss_after_mb:.0f} MB"),
            Figure(
                "load",
                "GET /health during the load: p95 / max",
                f"{self.health_p95_ms:.1f} / {self.health_max_ms:.1f} ms "
                f"({self.health_samples} samples, {self.health_failures} failed; probe at "
                f"{'nice ' + str(PROBE_NICE) if os.geteuid() == 0 else 'default priority'})",
                "p95 < 100 ms",
                self.health_p95_ms < 100 and self.health_failures == 0,
                timed=True,
            ),
            Figure(
                "load",
                "throughput",
                f"{self.throughput_mb_s:.1f} MB/s ({self.load_s:.1f} s; slowest client "
                f"{self.upload_max_s:.1f} s, p95 {self.upload_p95_s:.1f} s)",
            ),
            Figure(
                "load",
                "503 + Retry-After answers / dropped connections",
                f"{self.busy_answers} / {self.dropped_connections}",
            ),
        ]


@dataclass(frozen=True)
class _Job:
    """One client's upload, for a pool worker to encrypt into that client's spool."""

    public: PublicContext
    client: str
    round: int
    epoch: int
    roster_digest: bytes
    parameters: int
    seed: int
    spool: Path


def _update(
    seed: int, round: int, client: str, parameters: int
) -> tuple[dict[str, np.ndarray], float]:
    """A client's update and sample count (the same in the pool and in the client)."""
    rng = np.random.default_rng([seed, round, int(client.rsplit("-", 1)[1])])
    update = {"w": rng.uniform(-1, 1, parameters).astype(np.float32)}
    return update, float(rng.integers(10, 50))


def _encrypt_into_spool(job: _Job) -> tuple[str, str, int]:
    """Encrypt the job's update as the SDK would and leave it in the SDK's spool."""
    update, samples = _update(job.seed, job.round, job.client, job.parameters)
    body, manifest = prepare_upload(
        update,
        samples,
        job.public,
        federation=_FEDERATION,
        round=job.round,
        client=job.client,
        epoch=job.epoch,
        roster_digest=job.roster_digest,
    )
    spool = UploadSpool(job.spool / job.client)
    spool.keep(_FEDERATION, job.round, job.client, update_digest(update, samples), body, manifest)
    return job.client, hashlib.sha256(body).hexdigest(), len(body)


def _parameters_for(params: ParameterSet, upload_bytes: float) -> int:
    """Model parameters whose envelope is about ``upload_bytes``."""
    return max(1, int(upload_bytes / params.upload_bytes_per_parameter()) - 1)


def run_load(
    config: LoadConfig, root: Path, on_upload: Callable[[], None] = lambda: None
) -> LoadFigures:
    """Offer ``config.clients`` uploads at once and report how the server took them."""
    params = derive_parameters(
        "torture-load",
        k_max=config.clients + 1,
        committee_max=3,
        value_bits=16,
        tau=64,
        proofs=False,
    )
    size = _parameters_for(params, config.upload_mb * _MB)
    names = [f"client-{i}" for i in range(config.clients + 1)]  # the last never uploads
    ciphertexts = -(-(size + 1) // params.slots)
    offered = sum(expected_size(params, ciphertexts, _FEDERATION, n) for n in names[:-1])
    cap_bytes = max(1, int(offered * config.admitted_share))
    cap_uploads = max(1, int(config.clients * config.admitted_share))
    federation = LocalFederation(
        root, _FEDERATION, names, params=params, k_min=2, max_parameters=size + 10
    )
    caps = {
        "HE_AGG_MAX_INFLIGHT_UPLOAD_BYTES": str(cap_bytes),
        "HE_AGG_MAX_INFLIGHT_UPLOADS": str(cap_uploads),
        "HE_AGG_RETRY_AFTER_SECONDS": str(config.retry_after),
    }
    with server_environment(**caps):
        federation.start()
    files = ServerFiles(federation.server.data_dir)
    try:
        number = federation.admin_api().open_round(_FEDERATION, 3600).number
        encrypt_started = time.monotonic()
        sent = _encrypt_all(federation, number, names[:-1], size, config.seed, root / "spool")
        encrypt_s = time.monotonic() - encrypt_started
        taps = {name: UploadTap() for name in sent}
        participants = {
            name: tapped_participant(federation, name, taps[name], root / "spool") for name in sent
        }
        process = federation.server.process
        assert process is not None
        rss_before = rss_bytes(process.pid)
        sampler = MemorySampler(process.pid, 0.05, f"{federation.server.url}/health").start()
        acks, latencies, load_s = _offer(participants, number, config.seed, size, on_upload)
        sampler.stop()
        time.sleep(config.settle_s)  # what "after the load" means: this long after the last ack
        rss_after = rss_bytes(process.pid)
        for participant in participants.values():
            participant.close()
        stored = {u.client: u for u in files.uploads(_FEDERATION, number)}
        lost = sum(
            1 for name in acks if name not in stored or not files.blob_matches(stored[name].sha256)
        )
        corrupted = sum(
            1
            for name, receipt_sha in acks.items()
            if name in stored
            and (stored[name].sha256 != receipt_sha or receipt_sha != sent[name][0])
        )
        attempts = [a for tap in taps.values() for a in tap.attempts]
        total = sum(sent[name][1] for name in acks)
        return LoadFigures(
            clients=len(sent),
            upload_bytes=max(length for _, length in sent.values()),
            cap_bytes=cap_bytes,
            cap_uploads=cap_uploads,
            acknowledged=len(acks),
            never_acknowledged=len(sent) - len(acks),
            lost=lost,
            duplicated=max(0, len(stored) - len(acks)),
            corrupted=corrupted,
            busy_answers=sum(a.outcome == 503 for a in attempts),
            dropped_connections=sum(isinstance(a.outcome, str) for a in attempts),
            rss_before_mb=rss_before / _MiB,
            rss_peak_mb=sampler.peak / _MiB,
            rss_after_mb=rss_after / _MiB,
            health_p95_ms=percentile(sampler.health_ms, 95),
            health_max_ms=max(sampler.health_ms, default=float("nan")),
            health_samples=len(sampler.health_ms),
            health_failures=sampler.health_failures,
            throughput_mb_s=total / _MB / load_s,
            load_s=load_s,
            upload_p95_s=percentile(latencies, 95),
            upload_max_s=max(latencies, default=float("nan")),
            encrypt_s=encrypt_s,
        )
    finally:
        files.close()
        federation.stop()


def _encrypt_all(
    federation: LocalFederation, number: int, names: list[str], size: int, seed: int, spool: Path
) -> dict[str, tuple[str, int]]:
    """Every client's upload, encrypted by a process pool into its spool: client →
    (sha256, length) of the envelope."""
    with federation.participant(names[0]) as participant:
        epoch = participant.round_status(number).epoch
        public = participant.fetch_public_context(epoch)  # verified against the roster
        assert participant.roster is not None
        roster_digest = participant.roster.digest
    jobs = [_Job(public, name, number, epoch, roster_digest, size, seed, spool) for name in names]
    context = multiprocessing.get_context("fork")  # no threads of ours run yet
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        return {
            client: (digest, length)
            for client, digest, length in pool.map(_encrypt_into_spool, jobs)
        }


def _offer(
    participants: dict[str, Participant],
    number: int,
    seed: int,
    size: int,
    on_upload: Callable[[], None],
) -> tuple[dict[str, str], list[float], float]:
    """Every client submits at once (a barrier); returns client → acknowledged sha256,
    each client's seconds from the start to its acknowledgement, and the load's length."""
    acks: dict[str, str] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(participants) + 1)
    start = [0.0]

    def submit(name: str, participant: Participant) -> None:
        update, samples = _update(seed, number, name, size)
        barrier.wait()
        try:
            receipt = participant.submit(update, samples, round=number)
        except HeAggError:
            return
        with lock:
            acks[name] = receipt.sha256
            latencies.append(time.monotonic() - start[0])
        on_upload()

    threads = [
        threading.Thread(target=submit, args=(name, participant))
        for name, participant in participants.items()
    ]
    for thread in threads:
        thread.start()
    start[0] = time.monotonic()
    barrier.wait()
    for thread in threads:
        thread.join()
    return acks, latencies, time.monotonic() - start[0]
