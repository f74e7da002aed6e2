"""GPU benchmark: the torch backend's encryption and device aggregation per 1M parameters
on DEFAULT, with the CPU baselines measured in the same run.

    python benchmarks/bench_gpu.py                  # 1M parameters, on CUDA when present
    python benchmarks/bench_gpu.py --quick --device cpu   # a smoke run in seconds

Every timing is the median (with min and max) of ``--repeats`` runs after one warm-up,
with ``torch.cuda.synchronize()`` before and after each on a CUDA device, and also per
1M parameters (``median_per_million``). Writes benchmarks/results/gpu.json (or ``--out``):

* gpu.encrypt.total: TorchBackend.encrypt end to end: SEAL's encoder (CPU), the witness
  from the OS CSPRNG (CPU), host→device, the device's NTTs and products, device→host.
  gpu.encrypt.stages: the same work stage by stage (encode, sample, upload, compute,
  download), for one chunk when the whole vector fits one (1M parameters do).
* gpu.aggregate: one client's upload added from its wire bytes: header parsed on the
  host, body copied to the device, unpacked, range-checked, added into the accumulator
  (he_agg.backend.torch_aggregate). Proofs are carried but not verified (not measured).
* cpu.encrypt_rlwe: the same encryption on the CPU (encode, sample, he_agg.rlwe with the
  compiled NTT); cpu.encrypt_seal: the SEAL backend (SEAL's own Encryptor); neither
  includes proofs. cpu.aggregate: RunningSum from the same wire bytes, as the server adds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clients.bench.bench import environment
from he_agg import wellformed
from he_agg.aggregate import RunningSum
from he_agg.backend.proven import encode_blocks
from he_agg.backend.seal import SealBackend
from he_agg.backend.torch_aggregate import DeviceRunningSum
from he_agg.backend.torch_backend import DEFAULT_CHUNK, TorchBackend, default_device
from he_agg.envelope import EnvelopeView, Upload, encode_upload
from he_agg.modarith import U64Array
from he_agg.params import DEFAULT, ParameterSet
from he_agg.public import PublicContext
from he_agg.rlwe import encrypt_words, key_rows, sample_witness
from keys.committee import run_committee_setup

__all__ = ["main", "run"]

HERE = Path(__file__).resolve().parent
MILLION = 1_000_000
CPU_WINDOW = 64  # ciphertexts unpacked at a time by the CPU baseline (≈ 8 MB on DEFAULT)


def _timing(fn: Callable[[], object], repeats: int, sync: Callable[[], None], size: int) -> Any:
    fn()  # warm-up: tables, caches, compiled kernels
    sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "median": median,
        "min": min(times),
        "max": max(times),
        "median_per_million": median * MILLION / size,
    }


def _client_envelope(params: ParameterSet, words: U64Array) -> bytes:
    """A client's upload as it arrives; its proofs are placeholders of the right size."""
    count = int(words.shape[0])
    proofs = tuple(
        bytes(wellformed.proof_size(params, size)) for _, size in wellformed.groups(count)
    )
    upload = Upload(
        "bench", 1, "client-1", params.scale, words, proofs=proofs if params.proofs else ()
    )
    return encode_upload(upload, params)


def _cpu_add(params: ParameterSet, count: int, blob: bytes) -> None:
    """RunningSum from wire bytes, the compiled packed add (the server's and members' path)."""
    RunningSum(params, count).add_envelope(EnvelopeView.parse(blob, params), CPU_WINDOW)


def _gpu_encrypt(
    backend: TorchBackend, values: Any, public: PublicContext, time_it: Callable[..., Any]
) -> dict[str, Any]:
    params = public.params
    key = key_rows(public)
    plain = encode_blocks(values, public)
    witness = sample_witness(plain.shape[0], params)
    batch = backend.to_device(plain, witness)
    words = backend.encrypt_device(batch, key, params)
    stages = {
        "encode": time_it(lambda: encode_blocks(values, public)),
        "sample": time_it(lambda: sample_witness(plain.shape[0], params)),
        "upload": time_it(lambda: backend.to_device(plain, witness)),
        "compute": time_it(lambda: backend.encrypt_device(batch, key, params)),
        "download": time_it(lambda: backend.to_host(words)),
    }
    return {"total": time_it(lambda: backend.encrypt(values, public)), "stages": stages}


def run(parameters: int, repeats: int, device: str) -> dict[str, Any]:
    """Every measurement, JSON-ready."""
    params = DEFAULT
    setup = run_committee_setup(params, "bench-gpu", members=3, threshold=2)
    public = setup.public
    values = np.random.default_rng(0).uniform(-1, 1, parameters)
    backend = TorchBackend(device)
    on_cuda = backend.device.type == "cuda"

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(backend.device)

    def time_it(fn: Callable[[], object]) -> Any:
        return _timing(fn, repeats, sync, parameters)

    gpu_encrypt = _gpu_encrypt(backend, values, public, time_it)
    words = backend.encrypt(values, public)
    count = int(words.shape[0])
    blob = _client_envelope(params, words)
    device_sum = DeviceRunningSum(params, count, backend.device)
    gpu_aggregate = time_it(lambda: device_sum.add_envelope(blob))

    def cpu_rlwe() -> U64Array:
        plain = encode_blocks(values, public)
        return encrypt_words(plain, key_rows(public), sample_witness(count, params), params)

    seal = SealBackend()
    cpu = {
        "encrypt_rlwe": time_it(cpu_rlwe),
        "encrypt_seal": time_it(lambda: seal.encrypt(values, public)),
        "aggregate": time_it(lambda: _cpu_add(params, count, blob)),
    }
    env = environment()
    env["device"] = str(backend.device)
    env["gpu"] = torch.cuda.get_device_name(backend.device) if on_cuda else None
    env["cuda"] = torch.version.cuda
    gpu_total = gpu_encrypt["total"]["median"]
    return {
        "schema": "he-agg-bench-gpu/1",
        "environment": env,
        "parameter_set": {
            "name": params.name,
            "N": params.poly_degree,
            "prime_bits": list(params.prime_bits),
            "fingerprint": params.fingerprint.hex(),
        },
        "sizes": {
            "parameters": parameters,
            "ciphertexts": count,
            "upload_bytes": len(blob),
            "repeats": repeats,
            "chunk": backend.chunk,
        },
        "gpu": {"encrypt": gpu_encrypt, "aggregate": gpu_aggregate},
        "cpu": cpu,
        "speedup": {
            "encrypt_vs_cpu_rlwe": cpu["encrypt_rlwe"]["median"] / gpu_total,
            "encrypt_vs_cpu_seal": cpu["encrypt_seal"]["median"] / gpu_total,
            "aggregate_vs_cpu": cpu["aggregate"]["median"] / gpu_aggregate["median"],
        },
    }


def _summary(result: dict[str, Any]) -> str:
    rows = [
        ("GPU encrypt (all stages)", result["gpu"]["encrypt"]["total"]),
        *((f"  {stage}", timing) for stage, timing in result["gpu"]["encrypt"]["stages"].items()),
        ("GPU aggregate, one client", result["gpu"]["aggregate"]),
        ("CPU encrypt, rlwe", result["cpu"]["encrypt_rlwe"]),
        ("CPU encrypt, SEAL", result["cpu"]["encrypt_seal"]),
        ("CPU aggregate, one client", result["cpu"]["aggregate"]),
    ]
    env = result["environment"]
    lines = [
        f"device {env['device']} ({env['gpu'] or 'no GPU'}), torch {env['torch']}, "
        f"{result['sizes']['parameters']} parameters, {result['sizes']['ciphertexts']} "
        f"ciphertexts, median of {result['sizes']['repeats']}",
        f"{'':28} {'s per 1M params':>16} {'median s':>10}",
    ]
    lines += [f"{name:28} {t['median_per_million']:16.4f} {t['median']:10.4f}" for name, t in rows]
    lines += [f"speedup {name}: {value:.1f}×" for name, value in result["speedup"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu.json")
    parser.add_argument("--quick", action="store_true", help="two ciphertexts, three repeats")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 7)")
    parser.add_argument("--parameters", type=int, default=None, help="default 1M")
    args = parser.parse_args(argv)
    parameters = args.parameters or (2 * DEFAULT.slots if args.quick else MILLION)
    repeats = args.repeats or (3 if args.quick else 7)
    device = args.device or default_device()
    if parameters > DEFAULT_CHUNK * DEFAULT.slots:
        print(f"note: more than one chunk of {DEFAULT_CHUNK}: stages time the whole vector")
    result = run(parameters, repeats, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(_summary(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
