"""Core benchmark: the cost of threshold CKKS per 1M parameters, against TenSEAL/NVFlare.

Reports medians over repeats (after a warm-up), measured on one process of this machine,
and the TenSEAL baseline with NVFlare's defaults (ckks_vector, N=8192, [60, 40, 40],
scale 2^40) in the same run. Writes benchmarks/results/core.json and the table in
benchmarks/README.md (between the BEGIN/END markers).

    python benchmarks/bench_core.py               # 1M parameters, 100 clients for the error
    python benchmarks/bench_core.py --quick       # a smoke run in seconds (core-quick.json)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import threadpoolctl
from rich.progress import Progress

from clients.bench.bench import environment
from clients.encrypt_pool import EncryptionPool
from he_agg import wellformed
from he_agg.aggregate import ADD_WINDOW, RunningSum
from he_agg.backend import encrypt_vector, get_backend
from he_agg.backend.proven import encrypt_for_proof, encrypt_with_proofs
from he_agg.combine import DecryptionShare, average_from_shares
from he_agg.envelope import EnvelopeView, Upload, decode_upload, encode_upload
from he_agg.modarith import F64Array, U64Array
from he_agg.packing import weighted_vector
from he_agg.params import DEFAULT, ParameterSet, derive_parameters
from keys.committee import CommitteeSetup, run_committee_setup
from keys.decrypt import decryption_share

__all__ = ["bench_he_agg", "bench_tenseal", "main", "markdown"]

HERE = Path(__file__).resolve().parent
FEDERATION = "bench"
ROSTER = b"\x01" * 32  # the roster digest proofs are bound to (any 32 bytes, here)
NO_PROOFS = derive_parameters("default-no-proofs", proofs=False)  # `--parameters no-proofs`


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


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """No threads for a proof's commitments, nor for numpy's BLAS (the challenge products):
    the one-core rows are one core's work."""
    wellformed.set_threads(1)
    try:
        with threadpoolctl.threadpool_limits(1):
            yield
    finally:
        wellformed.set_threads()


def _encrypt(
    setup: CommitteeSetup, values: F64Array, client: str, pool: EncryptionPool | None = None
) -> tuple[U64Array, tuple[bytes, ...]]:
    """One client's words and proofs (a set with proofs), on one core or on ``pool``."""
    params = setup.public.params
    context = None
    if params.proofs:
        context = wellformed.ProofContext(params.fingerprint, FEDERATION, 0, 1, client, ROSTER)
    if pool is not None:
        return pool.encrypt(values, context)
    if context is not None:
        return encrypt_with_proofs(values, setup.public, context)
    return encrypt_vector(values, setup.public), ()


def _aggregate_clients(
    setup: CommitteeSetup, rng: np.random.Generator, size: int, clients: int, progress: Progress
) -> tuple[U64Array, F64Array, float, list[float], list[float]]:
    """Encrypt each client's update, aggregate it from its wire bytes (timed, compiled and
    numpy reference), and keep the exact weighted average to measure the error against."""
    params = setup.public.params
    compiled: RunningSum | None = None
    reference: RunningSum | None = None
    truth = np.zeros(size)
    total_weight = 0.0
    compiled_times, reference_times = [], []
    task = progress.add_task(f"{clients} clients encrypt + aggregate", total=clients)
    with EncryptionPool(setup.public) as pool:
        for client in range(clients):
            values = rng.uniform(-1, 1, size).astype(np.float32).astype(np.float64)
            samples = int(rng.integers(100, 1001))  # sample counts, as FedAvg weights
            truth += samples * values
            total_weight += samples
            name = f"c{client}"
            words, proofs = _encrypt(setup, weighted_vector(values, samples, params), name, pool)
            upload = Upload(FEDERATION, 1, name, params.scale, words, 0, proofs)
            wire = encode_upload(upload, params)
            compiled = compiled or RunningSum(params, words.shape[0])
            reference = reference or RunningSum(params, words.shape[0])
            start = time.perf_counter()
            view = EnvelopeView.parse(wire, params, federation=FEDERATION)
            compiled.add_envelope(view, ADD_WINDOW)
            compiled_times.append(time.perf_counter() - start)
            if client < 10:  # the reference path is slow: ten clients are enough to time it
                start = time.perf_counter()
                reference.add(decode_upload(wire, params, federation=FEDERATION, round=1).words)
                reference_times.append(time.perf_counter() - start)
            progress.advance(task)
    assert compiled is not None
    return compiled.result(), truth / total_weight, total_weight, compiled_times, reference_times


def bench_he_agg(
    params: ParameterSet, size: int, clients: int, repeats: int, progress: Progress
) -> dict[str, Any]:
    setup = run_committee_setup(params, FEDERATION, members=5, threshold=3)
    rng = np.random.default_rng(1)
    per_million = 1e6 / size

    x = rng.uniform(-1, 1, size).astype(np.float32).astype(np.float64)
    weighted = weighted_vector(x, 500, params)
    with one_core():
        encrypt, (words, proofs) = timed(lambda: _encrypt(setup, weighted, "client-0"), repeats)
        if params.proofs:  # the encryption alone, without the proof
            encrypt_only, _ = timed(lambda: encrypt_for_proof(weighted, setup.public), repeats)
        else:
            encrypt_only = encrypt
        seal = get_backend("seal")  # SEAL's own Encryptor through TenSEAL: save, then parse
        seal_encrypt, _ = timed(
            lambda: encrypt_vector(weighted, setup.public, backend=seal), repeats
        )
    with EncryptionPool(setup.public) as pool:
        workers = pool.workers
        encrypt_all, _ = timed(lambda: _encrypt(setup, weighted, "client-0", pool), repeats)
    upload = Upload(FEDERATION, 1, "client-0", params.scale, words, 0, proofs)
    envelope, blob = timed(lambda: encode_upload(upload, params), repeats)

    aggregate, truth, total_weight, compiled, reference = _aggregate_clients(
        setup, rng, size, clients, progress
    )
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
    # the average's error bound: the weighted sum's (3 members decrypt) times (1 + |x|) / Σ n_k
    bound = params.error_bound(3) * (1 + float(np.abs(truth).max())) / total_weight

    def scale(stats: dict[str, float]) -> dict[str, float]:
        return {k: v * per_million for k, v in stats.items()}

    return {
        "parameter_set": params.describe(),
        "parameters": size,
        "clients_for_error": clients,
        "upload_bytes_per_param": len(blob) / size,
        "encrypt_s_per_1M": scale(encrypt),
        "encrypt_all_cores_s_per_1M": scale(encrypt_all),
        "encrypt_only_s_per_1M": scale(encrypt_only),
        "seal_encryptor_s_per_1M": scale(seal_encrypt),
        "encrypt_workers": workers,
        "envelope_encode_s_per_1M": scale(envelope),
        "aggregate_s_per_client_per_1M": scale(_stats(compiled)),
        "aggregate_reference_s_per_client_per_1M": scale(_stats(reference)),
        "partial_decrypt_s_per_1M": scale(partial),
        "share_bytes_per_param": len(share.to_bytes(params)) / size,
        "combine_decode_s_per_1M": scale(finish),
        "max_error": max_error,
        "value_range": value_range,
        "max_error_relative": max_error / value_range,
        "max_error_bound": bound,
        "proofs": params.proofs,
        "value_bound": params.value_bound,
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


def _gpu_cell(gpu: dict[str, Any] | None, key: str) -> str:
    if gpu is None:
        return "not measured (no GPU here): `python benchmarks/bench_gpu.py` on one"
    return f"{gpu[key] * 1e3:.2f} ms ({gpu['environment'].get('gpu', 'GPU')})"


def _rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """(figure, default set, no-proofs set, TenSEAL with NVFlare's defaults, target)."""
    sets = (result["he_agg"], result["he_agg_no_proofs"])
    base = result["tenseal_nvflare"]
    gpu = result.get("gpu")

    def both(fn: Any) -> tuple[str, str]:
        return fn(sets[0]), fn(sets[1])

    cores = sets[0]["encrypt_workers"]
    return [
        (
            "Upload size",
            *both(lambda o: f"{o['upload_bytes_per_param']:.2f} B/param"),
            f"{base['upload_bytes_per_param']:.2f} B/param",
            "≤ 24 B/param",
        ),
        (
            "Encrypt (+ prove) per 1M, one core",
            *both(lambda o: _s(o["encrypt_s_per_1M"])),
            _s(base["encrypt_s_per_1M"]),
            "≤ 0.35 s",
        ),
        (
            "… the encryption alone (encode, sample, encrypt), one core",
            *both(lambda o: _s(o["encrypt_only_s_per_1M"])),
            "—",
            "≤ 0.35 s",
        ),
        (
            "… SEAL's own Encryptor instead (TenSEAL: save, parse), one core",
            *both(lambda o: _s(o["seal_encryptor_s_per_1M"])),
            "—",
            "—",
        ),
        (
            f"Encrypt (+ prove) per 1M, all {cores} cores",
            *both(lambda o: _s(o["encrypt_all_cores_s_per_1M"])),
            "n/a (one process)",
            "scales with cores",
        ),
        (
            "Envelope / serialize",
            *both(lambda o: _s(o["envelope_encode_s_per_1M"])),
            _s(base["serialize_s_per_1M"]),
            "—",
        ),
        (
            "Aggregation per client, from wire bytes (compiled)",
            *both(lambda o: _ms(o["aggregate_s_per_client_per_1M"])),
            _ms(base["deserialize_add_s_per_client_per_1M"]),
            "≤ 3 ms",
        ),
        (
            "… the numpy reference path",
            *both(lambda o: _ms(o["aggregate_reference_s_per_client_per_1M"])),
            "—",
            "—",
        ),
        (
            "Partial decryption per member",
            *both(lambda o: _s(o["partial_decrypt_s_per_1M"])),
            "n/a (single key)",
            "≤ 0.2 s",
        ),
        (
            "Decryption share size",
            *both(lambda o: f"{o['share_bytes_per_param']:.2f} B/param"),
            "n/a",
            "≤ 12 B/param",
        ),
        (
            "Combine and decode",
            *both(lambda o: _s(o["combine_decode_s_per_1M"])),
            "n/a",
            "≤ 0.2 s",
        ),
        (
            "Max error of the average (its bound)",
            *both(
                lambda o: (
                    f"{o['max_error']:.2e} ({o['max_error_bound']:.2e}), "
                    f"{o['clients_for_error']} clients"
                )
            ),
            "n/a",
            "≤ 1e-6 of the range",
        ),
        (
            "GPU encrypt per 1M (sampling, transfers)",
            _gpu_cell(gpu, "encrypt_s_per_1M"),
            "n/a (torch serves sets with proofs)",
            "—",
            "≤ 20 ms",
        ),
        (
            "GPU aggregation per client per 1M (transfer)",
            _gpu_cell(gpu, "aggregate_s_per_client_per_1M"),
            _gpu_cell(gpu, "aggregate_s_per_client_per_1M"),
            "—",
            "≤ 1 ms",
        ),
    ]


def _describe(ours: dict[str, Any]) -> str:
    p = ours["parameter_set"]
    return (
        f"`{p['name']}` (N={p['N']}, data primes {p['data_prime_bits']} bits, "
        f"proofs {'yes' if ours['proofs'] else 'no'}, V = 2^{math.log2(ours['value_bound']):.0f})"
    )


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores); tenseal "
        f"{env['tenseal']}, numpy {env['numpy']}. Per 1M float32 parameters; median "
        f"(min–max) of {result['repeats']} repeats after a warm-up. Parameter sets: default "
        f"{_describe(result['he_agg'])}, and `--parameters no-proofs` "
        f"{_describe(result['he_agg_no_proofs'])}; committee 3-of-5. Aggregation is timed "
        "per added client from its envelope's bytes in memory (compiled: "
        "`RunningSum.add_envelope`; reference: decode, then add).",
        "",
        "| Figure | he-agg default (proofs) | he-agg no-proofs | TenSEAL, NVFlare defaults "
        "| Target |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in _rows(result)),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100k parameters, 5 clients")
    parser.add_argument(
        "--out", type=Path, help="default results/core.json (results/core-quick.json with --quick)"
    )
    args = parser.parse_args()
    if args.quick:  # a smoke run never overwrites the checked-in figures
        args.size, args.clients, args.repeats = 100_000, 5, 2
    if args.out is None:
        args.out = HERE / "results" / ("core-quick.json" if args.quick else "core.json")
    with Progress() as progress:
        ours = bench_he_agg(DEFAULT, args.size, args.clients, args.repeats, progress)
        plain = bench_he_agg(NO_PROOFS, args.size, min(args.clients, 20), args.repeats, progress)
        task = progress.add_task("TenSEAL baseline", total=1)
        base = bench_tenseal(args.size, args.repeats)
        progress.advance(task)
    gpu_file = HERE / "results" / "gpu.json"
    result = {
        "environment": environment(),
        "repeats": args.repeats,
        "he_agg": ours,
        "he_agg_no_proofs": plain,
        "tenseal_nvflare": base,
        "gpu": json.loads(gpu_file.read_text()) if gpu_file.exists() else None,
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
