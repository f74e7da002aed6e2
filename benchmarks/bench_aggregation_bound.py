"""What bounds aggregation from wire bytes on this machine (issue 13's ≤ 3 ms target).

Adds one upload of 1M parameters (no-proofs set: two primes; or the default set: three)
into the round's uint64 accumulator with the shipped compiled kernel
(:func:`he_agg.packed_sum.add_packed`), and beside it, in the same run and on one core:

- *unpack and check only*: the same pass over the packed bytes without the accumulator
  (:func:`he_agg.packed_sum.check_packed`): the kernel's own arithmetic and its reads;
- *accumulator traffic only*: ``np.add`` of the accumulator into itself (every word read
  and written once, what any single-upload add must at least do to it);
- *k uploads per pass* (k = 2, 4): a kernel generated here, not shipped, that unpacks k
  uploads and adds their sum in one pass over the accumulator, so its traffic is shared.

Medians of ``--repeats`` after a warm-up, per client. Prints a markdown table and writes
``benchmarks/results/aggregation-bound-<set>.json``.

    python benchmarks/bench_aggregation_bound.py [--parameters no-proofs|default]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import threadpoolctl

from clients.bench.bench import environment
from he_agg.bitpack import pack
from he_agg.packed_sum import _GROUP, _residue, _rows_kernel, add_packed, check_packed
from he_agg.params import DEFAULT, ParameterSet, derive_parameters

HERE = Path(__file__).resolve().parent
PARAMETERS = 1_000_000


def _multi_kernel(width: int, k: int) -> Callable[..., bool]:
    """add_packed's kernel for k streams at once: rows += Σ of their residues."""
    import numba

    streams = ", ".join(f"s{i}" for i in range(k))
    lines = _rows_kernel("add_k", f"rows_out += the residues of {k} streams", width, streams)
    for i in range(_GROUP):
        for s in range(k):
            lines.append(f"            v{s} = {_residue(i, width).replace('stream[', f's{s}[')}")
            lines.append(f"            bad |= np.uint64(v{s} >= q)")
        lines.append(f"            row[o + {i}] += " + " + ".join(f"v{s}" for s in range(k)))
    lines.append("    return bad == 0")
    namespace: dict[str, Any] = {"np": np}
    exec(compile("\n".join(lines), f"<add_{k}_w{width}>", "exec"), namespace)
    return numba.njit(boundscheck=False, nogil=True)(namespace["add_k"])  # type: ignore[no-any-return]


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(params: ParameterSet, repeats: int, seed: int = 1) -> dict[str, Any]:
    n, primes = params.poly_degree, params.data_primes
    count = -(-PARAMETERS // params.slots)
    rng = np.random.default_rng(seed)
    uploads = [
        [
            np.frombuffer(
                pack(rng.integers(0, q, count * 2 * n, dtype=np.uint64), q.bit_length()),
                dtype="<u8",
            )
            for q in primes
        ]
        for _ in range(4)
    ]
    acc = np.zeros((len(primes), count * 2, n), dtype=np.uint64)

    regions = [[u.tobytes() for u in upload] for upload in uploads]

    def shipped_from_bytes() -> None:
        for j, q in enumerate(primes):
            add_packed(acc[j], regions[0][j], q.bit_length(), q)

    def check_only() -> None:
        for j, q in enumerate(primes):
            check_packed(regions[0][j], q.bit_length(), q)

    def accumulator_only() -> None:
        np.add(acc, acc, out=acc)

    rows: dict[str, float] = {
        "add_packed (shipped), per client": _median_ms(shipped_from_bytes, repeats),
        "unpack and check only, no accumulator": _median_ms(check_only, repeats),
        "accumulator traffic only (np.add in place)": _median_ms(accumulator_only, repeats),
    }
    for k in (2, 4):
        kernels = {q: _multi_kernel(q.bit_length(), k) for q in set(primes)}

        def together(k: int = k, kernels: dict[int, Callable[..., bool]] = kernels) -> None:
            for j, q in enumerate(primes):
                streams = [uploads[s][j] for s in range(k)]
                assert kernels[q](*streams, np.uint64(q), acc[j])

        rows[f"{k} uploads per pass, per client"] = _median_ms(together, repeats) / k
    # the k-stream kernel adds what k single adds add (checked, not assumed)
    acc[:] = 0
    for s in range(2):
        for j, q in enumerate(primes):
            add_packed(acc[j], regions[s][j], q.bit_length(), q)
    single = acc.copy()
    acc[:] = 0
    kernels = {q: _multi_kernel(q.bit_length(), 2) for q in set(primes)}
    for j, q in enumerate(primes):
        assert kernels[q](uploads[0][j], uploads[1][j], np.uint64(q), acc[j])
    assert np.array_equal(single, acc), "the 2-upload kernel disagrees with add_packed"
    words = count * 2 * n * len(primes)
    return {
        "parameters": params.name,
        "primes_bits": [q.bit_length() for q in primes],
        "ciphertexts": count,
        "words_per_upload": words,
        "packed_mb": sum(u.nbytes for u in uploads[0]) / 1e6,
        "accumulator_mb": acc.nbytes / 1e6,
        "repeats": repeats,
        "ms": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Set `{result['parameters']}` (primes {result['primes_bits']} bits), "
        f"{result['ciphertexts']} ciphertexts: {result['words_per_upload'] / 1e6:.1f}M words, "
        f"{result['packed_mb']:.1f} MB packed, accumulator {result['accumulator_mb']:.1f} MB; "
        f"median of {result['repeats']}, one core.",
        "",
        "| Pass | ms per client per 1M |",
        "|---|---|",
    ]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in result["ms"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", choices=["no-proofs", "default"], default="no-proofs")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    params = (
        derive_parameters("default-no-proofs", proofs=False)
        if args.parameters == "no-proofs"
        else DEFAULT
    )
    with threadpoolctl.threadpool_limits(1):
        result = measure(params, args.repeats)
    result["environment"] = environment()
    out = HERE / "results" / f"aggregation-bound-{args.parameters}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
