"""Core benchmark: the cost of threshold CKKS per 1M parameters, against TenSEAL/NVFlare.

Reports medians over repeats (after a warm-up), measured on one process of this machine,
and the TenSEAL baseline with NVFlare's defaults (ckks_vector, N=8192, [60, 40, 40],
scale 2^40) in the same run. Writes benchmarks/results/core.json and the table in
benchmarks/README.md (between the BEGIN/END markers).

    python benchmarks/bench_core.py               # 1M parameters, 100 clients for the error
    python benchmarks/bench_core.py --quick       # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from clients.bench.bench import environment
from he_agg.aggregate import RunningSum
from he_agg.backend import encrypt_vector
from he_agg.combine import DecryptionShare, average_from_shares
from he_agg.envelope import Upload, decode_upload, encode_upload
from he_agg.modarith import F64Array, U64Array
from he_agg.packing import weighted_vector
from he_agg.params import DEFAULT
from keys.committee import CommitteeSetup, run_committee_setup
from keys.decrypt import decryption_share

__all__ = ["bench_he_agg", "bench_tenseal", "main", "markdown"]

HERE = Path(__file__).resolve().parent
FEDERATION = "bench"


def timed(fn: Callable[[], Any], repeats: int) -> tuple[dict[str, float], Any]:
    fn()  # warm-up
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}, result


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _aggregate_clients(
    setup: CommitteeSetup, rng: np.random.Generator, size: int, clients: int, progress: Progress
) -> tuple[U64Array, F64Array, list[float]]:
    """Encrypt each client's update, aggregate it from its wire bytes (timed), and keep the
    exact weighted average to measure the error against."""
    params = setup.public.params
    running: RunningSum | None = None
    truth = np.zeros(size)
    total_weight = 0.0
    aggregate_times = []
    task = progress.add_task(f"{clients} clients encrypt + aggregate", total=clients)
    for client in range(clients):
        values = rng.uniform(-1, 1, size).astype(np.float32).astype(np.float64)
        samples = int(rng.integers(100, 1001))  # sample counts, as FedAvg weights
        truth += samples * values
        total_weight += samples
        words = encrypt_vector(weighted_vector(values, samples, params), setup.public)
        wire = encode_upload(Upload(FEDERATION, 1, f"c{client}", params.scale, words), params)
        running = running or RunningSum(params, words.shape[0])
        start = time.perf_counter()
        running.add(decode_upload(wire, params, federation=FEDERATION, round=1).words)
        aggregate_times.append(time.perf_counter() - start)
        progress.advance(task)
    assert running is not None
    return running.result(), truth / total_weight, aggregate_times


def bench_he_agg(size: int, clients: int, repeats: int, progress: Progress) -> dict[str, Any]:
    params = DEFAULT
    setup = run_committee_setup(params, FEDERATION, members=5, threshold=3)
    rng = np.random.default_rng(1)
    per_million = 1e6 / size

    x = rng.uniform(-1, 1, size).astype(np.float32).astype(np.float64)
    weighted = weighted_vector(x, 500, params)
    encrypt, words = timed(lambda: encrypt_vector(weighted, setup.public), repeats)
    upload = Upload(FEDERATION, 1, "client-0", params.scale, words)
    envelope, blob = timed(lambda: encode_upload(upload, params), repeats)

    aggregate, truth, aggregate_times = _aggregate_clients(setup, rng, size, clients, progress)
    digest = hashlib.sha256(aggregate.tobytes()).digest()
    subset = (1, 2, 3)

    def share_of(k: int) -> DecryptionShare:
        member = setup.members[k - 1].threshold_share
        return decryption_share(member, aggregate[:, 1], subset, params, digest)

    partial, share = timed(lambda: share_of(1), repeats)
    shares = [share] + [share_of(k) for k in subset[1:]]
    finish, average = timed(
        lambda: average_from_shares(aggregate[:, 0], shares, params, size), repeats
    )
    max_error = float(np.abs(average - truth).max())
    value_range = float(np.ptp(truth))

    def scale(stats: dict[str, float]) -> dict[str, float]:
        return {k: v * per_million for k, v in stats.items()}

    return {
        "parameter_set": params.describe(),
        "parameters": size,
        "clients_for_error": clients,
        "upload_bytes_per_param": len(blob) / size,
        "encrypt_s_per_1M": scale(encrypt),
        "envelope_encode_s_per_1M": scale(envelope),
        "aggregate_s_per_client_per_1M": scale(_stats(aggregate_times)),
        "partial_decrypt_s_per_1M": scale(partial),
        "share_bytes_per_param": len(share.to_bytes(params)) / size,
        "combine_decode_s_per_1M": scale(finish),
        "max_error": max_error,
        "value_range": value_range,
        "max_error_relative": max_error / value_range,
    }


def bench_tenseal(size: int, repeats: int) -> dict[str, Any]:
    import tenseal as ts

    context = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40])
    context.global_scale = 2**40
    x = np.random.default_rng(2).uniform(-1, 1, size).tolist()
    per_million = 1e6 / size
    encrypt, vector = timed(lambda: ts.ckks_vector(context, x), repeats)
    serialize, blob = timed(lambda: vector.serialize(), repeats)
    running = ts.ckks_vector(context, [0.0] * 8)

    def deserialize_add() -> Any:
        return ts.ckks_vector_from(context, blob) + ts.ckks_vector_from(context, blob)

    add, _ = timed(deserialize_add, repeats)
    del running
    return {
        "config": "ckks_vector, N=8192, [60,40,40], scale 2^40 (NVFlare defaults)",
        "upload_bytes_per_param": len(blob) / size,
        "encrypt_s_per_1M": {k: v * per_million for k, v in encrypt.items()},
        "serialize_s_per_1M": {k: v * per_million for k, v in serialize.items()},
        # two deserialisations and one add; per added client: half of it
        "deserialize_add_s_per_client_per_1M": {k: v * per_million / 2 for k, v in add.items()},
    }


def _s(stats: dict[str, float]) -> str:
    return f"{stats['median']:.3f} s ({stats['min']:.3f}–{stats['max']:.3f})"


def _ms(stats: dict[str, float]) -> str:
    low, high = stats["min"] * 1e3, stats["max"] * 1e3
    return f"{stats['median'] * 1e3:.1f} ms ({low:.1f}–{high:.1f})"


def _rows(ours: dict[str, Any], base: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, he-agg, TenSEAL with NVFlare's defaults, target) per line of the table."""
    return [
        (
            "Upload size",
            f"{ours['upload_bytes_per_param']:.2f} B/param",
            f"{base['upload_bytes_per_param']:.2f} B/param",
            "≤ 24 B/param",
        ),
        ("Encrypt", _s(ours["encrypt_s_per_1M"]), _s(base["encrypt_s_per_1M"]), "≤ 0.3 s"),
        (
            "Envelope / serialize",
            _s(ours["envelope_encode_s_per_1M"]),
            _s(base["serialize_s_per_1M"]),
            "—",
        ),
        (
            "Aggregation per added client, from wire bytes",
            _ms(ours["aggregate_s_per_client_per_1M"]),
            _ms(base["deserialize_add_s_per_client_per_1M"]),
            "≤ 3 ms",
        ),
        (
            "Partial decryption per member",
            _s(ours["partial_decrypt_s_per_1M"]),
            "n/a (single key)",
            "≤ 0.2 s",
        ),
        (
            "Decryption share size",
            f"{ours['share_bytes_per_param']:.2f} B/param",
            "n/a",
            "≤ 12 B/param",
        ),
        ("Combine and decode", _s(ours["combine_decode_s_per_1M"]), "n/a", "≤ 0.2 s"),
        (
            f"Max error, {ours['clients_for_error']} clients (of the value range)",
            f"{ours['max_error_relative']:.2e}",
            "n/a",
            "≤ 1e-6",
        ),
    ]


def markdown(result: dict[str, Any]) -> str:
    ours = result["he_agg"]
    rows = _rows(ours, result["tenseal_nvflare"])
    env = result["environment"]
    lines = [
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores), one process; "
        f"tenseal {env['tenseal']}, numpy {env['numpy']}. Per 1M float32 parameters; "
        f"median (min–max) of {result['repeats']} repeats after a warm-up. he-agg parameter set "
        f"`{ours['parameter_set']['name']}`: N={ours['parameter_set']['N']}, data primes "
        f"{ours['parameter_set']['data_prime_bits']} bits, σ_flood "
        f"{ours['parameter_set']['sigma_flood']}; committee 3-of-5.",
        "",
        "| Figure | he-agg | TenSEAL, NVFlare defaults | Target |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100k parameters, 5 clients")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "core.json")
    args = parser.parse_args()
    if args.quick:
        args.size, args.clients, args.repeats = 100_000, 5, 2
    with Progress() as progress:
        ours = bench_he_agg(args.size, args.clients, args.repeats, progress)
        task = progress.add_task("TenSEAL baseline", total=1)
        base = bench_tenseal(args.size, args.repeats)
        progress.advance(task)
    result = {
        "environment": environment(),
        "repeats": args.repeats,
        "he_agg": ours,
        "tenseal_nvflare": base,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    print(table)
    if not args.quick:
        readme = HERE / "README.md"
        text = readme.read_text()
        begin, end = "<!-- BEGIN core table -->", "<!-- END core table -->"
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        readme.write_text(f"{head}{begin}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    main()
