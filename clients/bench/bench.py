"""``he-agg bench``: what homomorphic encryption costs a federated round, stage by stage.

For every cell of the grid (model size × clients) it measures, after a warm-up, the median
(min, max) over repeats of: encode, encrypt, serialize, upload over loopback HTTP to a real
aggregator (all clients at once), aggregate from wire bytes, one member's partial
decryption, combine-and-decode, and the whole round's critical path (clients and members
work in parallel, so one of each counts). In the same run and on the same server it
measures plaintext FedAvg (float32 updates), and TenSEAL's CKKSVector with NVFlare's
defaults and at depth 0 (:mod:`clients.bench.rounds`); optionally, the end-to-end slowdown
of real workloads (:mod:`clients.bench.end_to_end`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from clients.bench.bench_report import write_bench_report
from clients.bench.rounds import BenchFederations, ckks_round, plain_round, tenseal_round
from he_agg.params import ParameterSet, derive_parameters

__all__ = ["BenchConfig", "bench_parameters", "environment", "run_bench"]


@dataclass(frozen=True)
class BenchConfig:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    clients: tuple[int, ...] = (2, 10, 100)
    repeats: int = 3
    out: Path = Path("benchmarks/results")
    upload_threads: int = 10
    slowdowns: bool = True

    @classmethod
    def quick(cls, out: Path) -> BenchConfig:
        return cls(sizes=(10_000,), clients=(2, 10), repeats=2, out=out, slowdowns=False)


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return "unknown"
    lines = cpuinfo.read_text().splitlines()
    names = (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return next(names, "unknown")


def environment() -> dict[str, Any]:
    """The machine and library versions, recorded beside every result."""
    import tenseal
    import torch

    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tenseal": tenseal.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def bench_parameters(max_clients: int) -> ParameterSet:
    """K_max covers the largest cell; weights 1 and values in [−1, 1]."""
    return derive_parameters(
        "bench",
        k_max=max_clients,
        committee_max=3,
        value_bits=math.ceil(math.log2(max_clients)) + 1,
        proofs=False,  # the suite measures HE without proofs; benchmarks/bench_proofs.py adds them
    )


def _repeat(measure: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    measure()  # warm-up
    runs = [measure() for _ in range(repeats)]
    out: dict[str, Any] = {
        "seconds": {
            stage: _stats([r["seconds"][stage] for r in runs]) for stage in runs[0]["seconds"]
        }
    }
    for key in runs[0]:
        if key != "seconds":
            out[key] = runs[-1][key]
    return out


def _cell(h: BenchFederations, config: BenchConfig, size: int, clients: int) -> dict[str, Any]:
    """One grid cell: he-agg, plaintext and the two TenSEAL baselines."""
    vector = np.random.default_rng(size).uniform(-1, 1, size)
    threads, repeats = config.upload_threads, config.repeats
    he = _repeat(partial(ckks_round, h, vector, clients, threads), repeats)
    plain = _repeat(partial(plain_round, h, vector, clients, threads), repeats)
    return {
        "parameters": size,
        "clients": clients,
        "he_agg": he,
        "plaintext": plain,
        "tenseal_nvflare": _repeat(partial(tenseal_round, size, clients, [60, 40, 40]), repeats),
        "tenseal_depth0": _repeat(partial(tenseal_round, size, clients, [60, 40]), repeats),
        "ratio_to_plaintext": he["seconds"]["round"]["median"]
        / plain["seconds"]["round"]["median"],
    }


def run_bench(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    config.out.mkdir(parents=True, exist_ok=True)
    params = bench_parameters(max(config.clients))
    result: dict[str, Any] = {
        "schema": "he-agg-bench/1",
        "environment": environment(),
        "repeats": config.repeats,
        "cells": [],
    }
    result["parameter_set"] = params.describe()
    with (
        tempfile.TemporaryDirectory(prefix="he-agg-bench-") as folder,
        Progress(disable=not progress) as bar,
    ):
        task = bar.add_task("starting the aggregator and committee", total=None)
        federations = BenchFederations(Path(folder), params, max(config.clients), max(config.sizes))
        cells = [(s, k) for s in config.sizes for k in config.clients]
        bar.update(task, total=len(cells) + int(config.slowdowns), description="bench grid")
        try:
            for size, clients in cells:
                result["cells"].append(_cell(federations, config, size, clients))
                bar.advance(task)
        finally:
            federations.stop()
        if config.slowdowns:
            from clients.bench.end_to_end import slowdowns  # torch, the pilot's data

            bar.update(task, description="end-to-end rounds (article CNN, pilot)")
            result["end_to_end"] = slowdowns(config.repeats)
            bar.advance(task)
    (config.out / "suite.json").write_text(json.dumps(result, indent=2) + "\n")
    write_bench_report(result, config.out)
    return result
