"""Upload throughput over loopback: 10 concurrent clients, 1M-parameter updates.

Measures, for the same server in the same run, CKKS envelopes (he-agg's default set) and
plaintext float32 updates: wall-clock MB/s for all ten uploads, and the server process's
CPU seconds per MB (utime + stime from /proc). Updates are encrypted before the clock
starts; the federations enrol one extra client so no round closes during the uploads.
Medians over repeats (one round each). Writes results/upload.json.

    python benchmarks/bench_upload.py [--size 1000000] [--clients 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from clients.harness import LocalFederation
from clients.harness.signals import exit_on_sigterm
from clients.upload import prepare_upload
from he_agg.api import paths
from he_agg.api.states import FederationMode
from he_agg.api.transport import SignedClient
from he_agg.packing import flatten, weighted_vector
from he_agg.params import DEFAULT
from he_agg.plain import encode_plain_upload
from he_agg.public import PublicContext

__all__ = ["main", "run_mode"]

HERE = Path(__file__).resolve().parent


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bodies(
    local: LocalFederation,
    public: PublicContext | None,
    update: dict[str, Any],
    number: int,
    names: list[str],
) -> list[bytes]:
    """Each client's upload, encrypted (CKKS, proven where the set asks for proofs, bound to
    the round's epoch and roster) or float32 (plaintext), before the clock starts."""
    if public is None:
        body = encode_plain_upload(weighted_vector(flatten(update)[0], 10, DEFAULT))
        return [body] * len(names)
    with local.participant(names[0]) as participant:
        epoch = participant.round_status(number).epoch
        participant.fetch_public_context(epoch)  # verifies the roster that the proofs bind
        assert participant.roster is not None
        roster_digest = participant.roster.digest
    return [
        prepare_upload(
            update,
            10,
            public,
            federation=local.federation,
            round=number,
            client=n,
            epoch=epoch,
            roster_digest=roster_digest,
        )[0]
        for n in names
    ]


def _send_all(
    local: LocalFederation, number: int, names: list[str], bodies: list[bytes], manifest: str
) -> tuple[float, float]:
    """All uploads at once, one thread per client: (wall seconds, server CPU seconds)."""
    senders = [SignedClient(local.server.url, local.identities[n].signing) for n in names]

    def send(index: int) -> None:
        path = paths.update(local.federation, number, names[index])
        senders[index].request("PUT", path, content=bodies[index], manifest=manifest)

    assert local.server.process is not None
    cpu_before = cpu_seconds(local.server.process.pid)
    start = time.perf_counter()
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(send, range(len(names))))
    wall = time.perf_counter() - start
    cpu = cpu_seconds(local.server.process.pid) - cpu_before
    for sender in senders:
        sender.close()
    return wall, cpu


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_mode(
    mode: FederationMode, size: int, clients: int, repeats: int, root: Path, progress: Progress
) -> dict[str, Any]:
    names = [f"bank-{i}" for i in range(clients + 1)]  # +1: no round closes
    local = LocalFederation(
        root / mode, f"bench-{mode}", names, mode=mode, k_min=1, max_parameters=size + 10
    )
    local.start()
    try:
        rng = np.random.default_rng(0)
        update = {"w": rng.uniform(-1, 1, size).astype(np.float32)}
        manifest = flatten(update)[1].to_json()
        public = None
        if mode == FederationMode.CKKS:
            with local.participant(names[0]) as participant:
                public = participant.fetch_public_context()
        rates, cpu_per_mb, sizes = [], [], []
        task = progress.add_task(f"{mode} uploads", total=repeats)
        for _ in range(repeats):
            number = local.admin_api().open_round(local.federation, 3600).number
            bodies = _bodies(local, public, update, number, names[:clients])
            wall, cpu = _send_all(local, number, names[:clients], bodies, manifest)
            megabytes = sum(len(b) for b in bodies) / 1e6
            rates.append(megabytes / wall)
            cpu_per_mb.append(cpu / megabytes)
            sizes.append(len(bodies[0]))
            progress.advance(task)
    finally:
        local.stop()
    return {
        "bytes_per_upload": sizes[0],
        "bytes_per_param": sizes[0] / size,
        "throughput_MB_per_s": _stats(rates),
        "server_cpu_s_per_MB": _stats(cpu_per_mb),
        "params_per_s": statistics.median(rates) * 1e6 / (sizes[0] / size),
    }


def main() -> None:
    exit_on_sigterm()  # its servers and members stop with it
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "upload.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, Progress() as progress:
        result = {
            "parameters": args.size,
            "clients": args.clients,
            "repeats": args.repeats,
            "ckks": run_mode(
                FederationMode.CKKS, args.size, args.clients, args.repeats, Path(folder), progress
            ),
            "plaintext": run_mode(
                FederationMode.PLAINTEXT,
                args.size,
                args.clients,
                args.repeats,
                Path(folder),
                progress,
            ),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    ckks, plain = result["ckks"], result["plaintext"]
    print("| Updates | Bytes/param | Throughput (MB/s) | Server CPU (s/MB) | Parameters/s |")
    print("|---|---|---|---|---|")
    for label, row in (("CKKS (he-agg default)", ckks), ("plaintext float32", plain)):
        t, c = row["throughput_MB_per_s"], row["server_cpu_s_per_MB"]
        print(
            f"| {label} | {row['bytes_per_param']:.2f} | {t['median']:.1f} "
            f"({t['min']:.1f}–{t['max']:.1f}) | {c['median']:.4f} | {row['params_per_s']:.3g} |"
        )


if __name__ == "__main__":
    main()
