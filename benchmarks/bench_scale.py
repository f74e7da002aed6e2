"""One round of many clients on this machine: 1,000 clients × 1M parameters (issue 13).

The aggregator (uvicorn, SQLite + blobs) and a 2-of-3 committee run as their own
processes, as in production; the clients are threads of this process uploading over
loopback HTTP, ``--concurrency`` at a time, each signed with its own enrolled key. Every
client's upload is a real envelope, validated, stored and summed by the server and
fetched, checked and added by every member while the round is open; the round is then
closed and decrypted, and the published average is checked against the exact one.

Client encryption is not what this measures (``bench_core`` does, per client): encrypting
1,000 updates of 1M parameters would take 1,000 × 0.2 s here before the first upload. So
``--distinct`` updates are encrypted, and each client wraps one of them in its own envelope
(its own name, signed by its own key); the server and the members do all their work per
client. Reported: wall time of the upload phase and of close → model, the server's and
each member's peak RSS and CPU seconds, the disk the blobs take, and throughput.

    python benchmarks/bench_scale.py                   # 1,000 × 1M (about 15 minutes here)
    python benchmarks/bench_scale.py --quick           # 20 × 10k, in about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from clients.bench.bench import environment
from clients.harness.local import LocalFederation
from clients.harness.signals import exit_on_sigterm
from clients.participant import Participant
from he_agg.backend import encrypt_vector
from he_agg.envelope import Upload, encode_upload
from he_agg.packing import flatten, weighted_vector
from he_agg.params import derive_parameters

__all__ = ["main", "run_scale"]

HERE = Path(__file__).resolve().parent
FEDERATION = "scale"


def _proc(pid: int) -> dict[str, float]:
    """Peak RSS (MB) and CPU seconds of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"peak_rss_mb": peak / 1024, "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


def _disk(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def run_scale(
    root: Path, clients: int, size: int, distinct: int, concurrency: int, progress: Progress
) -> dict[str, Any]:
    params = derive_parameters("default-no-proofs", proofs=False)  # `--parameters no-proofs`
    names = [f"client-{i:04d}" for i in range(clients)]
    local = LocalFederation(
        root,
        FEDERATION,
        names,
        params=params,
        k_min=clients,
        max_parameters=size + 8,
        share_timeout=600.0,
    )
    started = time.perf_counter()
    local.start(timeout=300)
    setup_s = time.perf_counter() - started
    try:
        number = local.admin_api().open_round(FEDERATION, 7200).number
        first = local.participant(names[0])
        public = first.fetch_public_context(first.round_status(number).epoch)
        rng = np.random.default_rng(7)
        updates = [rng.uniform(-1, 1, size).astype(np.float32) for _ in range(distinct)]
        samples = [int(rng.integers(100, 1001)) for _ in range(distinct)]
        task = progress.add_task(f"encrypt {distinct} distinct updates", total=distinct)
        encrypted, encrypt_s = [], []
        for values, weight in zip(updates, samples, strict=True):
            start = time.perf_counter()
            vector = weighted_vector(values.astype(np.float64), weight, params)
            encrypted.append(encrypt_vector(vector, public))
            encrypt_s.append(time.perf_counter() - start)
            progress.advance(task)
        manifest = flatten({"w": updates[0]})[1]
        epoch = first.round_status(number).epoch
        first.close()

        task = progress.add_task(f"{clients} clients upload", total=clients)
        uploaded = [0]
        lock = threading.Lock()

        def upload(index: int) -> None:
            name = names[index]
            words = encrypted[index % distinct]
            body = encode_upload(
                Upload(FEDERATION, number, name, params.scale, words, epoch), params
            )
            with Participant(
                local.server.url,
                FEDERATION,
                name,
                local.identities[name].signing,
                show_progress=False,
                roster=local.roster,
            ) as participant:
                participant.upload(number, body, manifest)
            with lock:
                uploaded[0] += len(body)
            progress.advance(task)

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(upload, range(clients)))
        upload_s = time.perf_counter() - start

        start = time.perf_counter()
        local.admin_api().close_round(FEDERATION, number)
        reader = local.participant(names[0])
        model = reader.wait_for_model(number, timeout=3600)
        publish_s = time.perf_counter() - start
        reader.close()

        weights = np.array([samples[i % distinct] for i in range(clients)], dtype=np.float64)
        stack = np.stack([updates[i % distinct].astype(np.float64) for i in range(distinct)])
        per_update = np.bincount(np.arange(clients) % distinct, weights=weights, minlength=distinct)
        expected = per_update @ stack / weights.sum()
        error = float(np.abs(flatten(model)[0] - expected).max())
        bound = params.error_bound(2) * 2 / float(weights.sum())
        server = _proc(local.server.process.pid)  # type: ignore[union-attr]
        members = [_proc(p.pid) for p in local.processes]
        blobs = _disk(local.server.data_dir / "blobs")
    finally:
        local.stop()
    return {
        "parameter_set": params.describe(),
        "clients": clients,
        "parameters": size,
        "distinct_updates": distinct,
        "concurrency": concurrency,
        "setup_s": setup_s,
        "encrypt_s_median": float(np.median(encrypt_s)),
        "upload_phase_s": upload_s,
        "close_to_model_s": publish_s,
        "round_s": upload_s + publish_s,
        "uploaded_bytes": uploaded[0],
        "upload_mb_per_s": uploaded[0] / upload_s / 1e6,
        "blob_disk_bytes": blobs,
        "server": server,
        "members": members,
        "max_error": error,
        "error_bound": bound,
        "correct": error <= bound,
    }


def markdown(result: dict[str, Any]) -> str:
    r = result["scale"]
    env = result["environment"]
    members = r["members"]
    lines = [
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores): one round of "
        f"{r['clients']:,} clients × {r['parameters']:,} parameters, set "
        f"`{r['parameter_set']['name']}`, committee 2-of-3, {r['concurrency']} uploads in "
        f"flight, {r['distinct_updates']} distinct encryptions (see the script's docstring).",
        "",
        "| Figure | Value |",
        "|---|---|",
        f"| Upload phase (every client's PUT acknowledged) | {r['upload_phase_s']:.1f} s "
        f"({r['upload_mb_per_s']:.0f} MB/s) |",
        f"| Close → model published (members finish checking, endorse, decrypt) | "
        f"{r['close_to_model_s']:.1f} s |",
        f"| Round (upload phase + close → model) | {r['round_s']:.1f} s |",
        f"| Bytes uploaded / blob disk | {r['uploaded_bytes'] / 1e9:.2f} GB / "
        f"{r['blob_disk_bytes'] / 1e9:.2f} GB |",
        f"| Server peak RSS, CPU | {r['server']['peak_rss_mb']:.0f} MB, "
        f"{r['server']['cpu_s']:.0f} s |",
        "| Members' peak RSS | " + ", ".join(f"{m['peak_rss_mb']:.0f} MB" for m in members) + " |",
        "| Members' CPU (fetch, verify, add every upload; decrypt) | "
        + ", ".join(f"{m['cpu_s']:.0f} s" for m in members)
        + f" ({sum(m['cpu_s'] for m in members) / len(members) / r['clients'] * 1e3:.0f} ms "
        "per upload each) |",
        f"| Max error of the average (bound) | {r['max_error']:.2e} ({r['error_bound']:.2e}) |",
        f"| One client's encryption (native backend; not in the round's time) | "
        f"{r['encrypt_s_median']:.2f} s |",
    ]
    return "\n".join(lines)


def main() -> None:
    exit_on_sigterm()  # its servers and members stop with it
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="20 clients × 10,000 parameters")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (big)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.params, args.distinct = 20, 10_000, 4
    root = Path(tempfile.mkdtemp(prefix="he-agg-scale-", dir=args.work))
    try:
        with Progress() as progress:
            scale = run_scale(
                root, args.clients, args.params, args.distinct, args.concurrency, progress
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {"environment": environment(), "scale": scale}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "scale-quick" if args.quick else "scale"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / f"{name}.md").write_text(table + "\n")
    print(table)
    if not scale["correct"]:
        raise SystemExit("the published average is outside its error bound")


if __name__ == "__main__":
    main()
