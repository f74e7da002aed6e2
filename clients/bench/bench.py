"""``he-agg bench``: what homomorphic encryption costs a federated round, stage by stage.

For every cell of the grid (model size × clients) it measures, after a warm-up, the median
(min, max) over repeats of: encode, encrypt, serialize, upload over loopback HTTP to a real
aggregator (all clients at once), aggregate from wire bytes, one member's partial
decryption, combine-and-decode, and the whole round's critical path (clients and members
work in parallel, so one of each counts). In the same run and on the same server it
measures plaintext FedAvg (float32 updates), and TenSEAL's CKKSVector with NVFlare's
defaults and at depth 0. Aggregation and decryption are timed in this process with the
functions the server and the members run, on the committee's real key shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as sealapi
from rich.progress import Progress

from clients.bench_report import STAGES
from clients.local import LocalFederation
from he_agg.aggregate import RunningSum
from he_agg.api.transport import SignedClient
from he_agg.combine import combine
from he_agg.encoding import blocks, decode_aggregate, encode_block
from he_agg.public import PublicContext
from he_agg.envelope import Upload, decode_upload, encode_upload
from he_agg.packing import flatten, weighted_average, weighted_vector
from he_agg.params import ParameterSet, derive_parameters
from he_agg.plain import decode_plain_upload, encode_plain_upload
from he_agg.seal_codec import ciphertext_from_bytes
from he_agg.seal_context import save_bytes
from keys.decrypt import decryption_share
from keys.member import MemberSecrets

__all__ = ["BenchConfig", "run_bench"]

PLAIN_STAGES = ["serialize", "upload", "aggregate"]


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


def environment() -> dict[str, Any]:
    import tenseal
    import torch

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    return {
        "cpu": cpu,
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
    )


class _Harness:
    """Two federations on one aggregator process: CKKS and plaintext."""

    def __init__(self, root: Path, max_clients: int, max_size: int) -> None:
        names = [f"client-{i}" for i in range(max_clients + 1)]  # +1: no round closes
        self.params = bench_parameters(max_clients)
        self.ckks = LocalFederation(
            root / "ckks", "bench", names, params=self.params, k_min=1, max_parameters=max_size + 10
        )
        self.ckks.start()
        self.plain = LocalFederation(
            root / "plain",
            "bench-plain",
            names,
            params=self.params,
            mode="plaintext",
            k_min=1,
            max_parameters=max_size + 10,
        )
        self.plain.start()
        self.public: PublicContext = self.ckks.participant(names[0]).fetch_public_context()
        state = root / "ckks" / "member-{}" / "state" / "member.key"
        self.shares = [
            MemberSecrets.load(
                Path(str(state).format(i)), self.ckks.passphrase, self.params
            ).threshold_share
            for i in (1, 2)
        ]
        self.senders: dict[tuple[str, str], SignedClient] = {}

    def sender(self, local: LocalFederation, name: str) -> SignedClient:
        key = (local.federation, name)
        if key not in self.senders:
            self.senders[key] = SignedClient(local.server.url, local.identities[name].signing)
        return self.senders[key]

    @staticmethod
    def open_round(local: LocalFederation) -> int:
        return int(local.admin_api().open_round(local.federation, 24 * 3600)["number"])

    def upload_all(
        self, local: LocalFederation, number: int, bodies: list[bytes], manifest: str, threads: int
    ) -> float:
        """Every client's PUT at once (``threads`` in flight); wall-clock seconds."""
        names = list(local.identities)

        def send(index: int) -> None:
            path = f"/v1/federations/{local.federation}/rounds/{number}/updates/{names[index]}"
            self.sender(local, names[index]).request(
                "PUT", path, content=bodies[index], manifest=manifest
            )

        start = time.perf_counter()
        with ThreadPoolExecutor(min(threads, len(bodies))) as pool:
            list(pool.map(send, range(len(bodies))))
        return time.perf_counter() - start

    def stop(self) -> None:
        for sender in self.senders.values():
            sender.close()
        self.ckks.stop()
        self.plain.stop()


def _ckks_round(
    h: _Harness, vector: npt.NDArray[np.float64], clients: int, threads: int
) -> dict[str, Any]:
    params, public = h.params, h.public
    weighted = weighted_vector(vector, 1.0, params)
    t: dict[str, float] = {}
    start = time.perf_counter()
    plains = [
        encode_block(block, public.seal, public.encoder) for block in blocks(weighted, params.slots)
    ]
    t["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    cipher = sealapi.Ciphertext()
    words = np.empty((len(plains), 2, len(params.data_primes), params.poly_degree), np.uint64)
    for index, plain in enumerate(plains):
        public.encryptor.encrypt(plain, cipher)
        words[index] = ciphertext_from_bytes(save_bytes(cipher)).data
    t["encrypt"] = time.perf_counter() - start
    names = list(h.ckks.identities)
    number = h.open_round(h.ckks)
    start = time.perf_counter()
    first = encode_upload(Upload("bench", number, names[0], params.scale, words), params)
    t["serialize"] = time.perf_counter() - start
    bodies = [first] + [
        encode_upload(Upload("bench", number, n, params.scale, words), params)
        for n in names[1:clients]
    ]
    manifest = flatten({"values": vector})[1].to_header()
    t["upload"] = h.upload_all(h.ckks, number, bodies, manifest, threads)
    start = time.perf_counter()
    running = RunningSum(params, words.shape[0])
    for body in bodies:
        running.add(decode_upload(body, params, federation="bench").words)
    aggregate = running.result()
    t["aggregate"] = time.perf_counter() - start
    digest = hashlib.sha256(aggregate.tobytes()).digest()
    start = time.perf_counter()
    share = decryption_share(h.shares[0], aggregate[:, 1], (1, 2), params, digest)
    t["partial_decrypt"] = time.perf_counter() - start
    other = decryption_share(h.shares[1], aggregate[:, 1], (1, 2), params, digest)
    start = time.perf_counter()
    average = weighted_average(
        decode_aggregate(combine(aggregate[:, 0], [share, other], params), public.seal), vector.size
    )
    t["combine_decode"] = time.perf_counter() - start
    t["round"] = sum(t[s] for s in STAGES)
    return {
        "seconds": t,
        "upload_bytes": len(first),
        "share_bytes": len(share.to_bytes(params)),
        "max_error": float(np.abs(average - vector).max()),
    }


def _plain_round(
    h: _Harness, vector: npt.NDArray[np.float64], clients: int, threads: int
) -> dict[str, Any]:
    t: dict[str, float] = {}
    start = time.perf_counter()
    body = encode_plain_upload(weighted_vector(vector, 1.0, h.params))
    t["serialize"] = time.perf_counter() - start
    manifest = flatten({"values": vector})[1].to_header()
    t["upload"] = h.upload_all(h.plain, h.open_round(h.plain), [body] * clients, manifest, threads)
    start = time.perf_counter()
    total = np.zeros(vector.size + 1)
    for _ in range(clients):
        total += decode_plain_upload(body)
    t["aggregate"] = time.perf_counter() - start
    t["round"] = sum(t[s] for s in PLAIN_STAGES)
    return {"seconds": t, "upload_bytes": len(body)}


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence TenSEAL's C++ warning about vectors larger than one ciphertext (it writes
    straight to file descriptor 1, past Python's sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _tenseal(size: int, clients: int, bits: list[int]) -> dict[str, Any]:
    import tenseal as ts

    context = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=bits)
    context.global_scale = 2**40
    values = np.random.default_rng(1).uniform(-1, 1, size).tolist()
    t: dict[str, float] = {}
    with quiet_stdout():
        start = time.perf_counter()
        vector = ts.ckks_vector(context, values)
        t["encrypt"] = time.perf_counter() - start
    start = time.perf_counter()
    blob = vector.serialize()
    t["serialize"] = time.perf_counter() - start
    with quiet_stdout():
        start = time.perf_counter()
        total = ts.ckks_vector_from(context, blob)
        for _ in range(clients - 1):
            total += ts.ckks_vector_from(context, blob)
        t["aggregate"] = time.perf_counter() - start
    t["round"] = sum(t.values())
    return {"seconds": t, "upload_bytes": len(blob)}


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


def _slowdowns(repeats: int) -> dict[str, Any]:
    """End-to-end: one round of the article's CNN, and of the pilot's logistic regression,
    HE through the service against plaintext through the same service."""
    import torch

    from clients.datasets import ArticleCNN, digits_28x28
    from clients.pilot_bank import make_model, standardise
    from clients.pilot_data import load_lending_club
    from clients.simulation import FederatedLearning

    def per_round(
        make: Callable[[], Any],
        load: Callable[[FederatedLearning], Any],
        secure: bool,
        **options: Any,
    ) -> list[float]:
        fl = FederatedLearning(
            make(),
            num_rounds=repeats + 1,
            transport="http",
            secure=secure,
            show_progress=False,
            **options,
        )
        history = load(fl).train()
        return [sum(v for k, v in r.seconds.items() if k != "evaluate") for r in history.rounds[1:]]

    out: dict[str, Any] = {}
    torch.manual_seed(0)
    digits = digits_28x28()
    article = {
        mode: per_round(ArticleCNN, lambda fl: fl.load_data(digits), mode == "he")
        for mode in ("he", "plain")
    }
    out["article_cnn"] = {
        "he_round_s": _stats(article["he"]),
        "plain_round_s": _stats(article["plain"]),
    }
    data = load_lending_club()
    stats = {
        "mean": data.x[data.train].mean(0),
        "sq": (data.x[data.train] ** 2).mean(0),
        "pos": np.array([data.y[data.train].mean()]),
    }
    x, pos_weight = standardise(data.x[data.train], stats)
    x_test, _ = standardise(data.x[data.test], stats)
    positions, start = [], 0
    order = np.concatenate(
        [np.flatnonzero(np.isin(data.train, data.bank_rows(b))) for b in data.bank_names]
    )
    for bank in data.bank_names:
        count = len(data.bank_rows(bank))
        positions.append(np.arange(start, start + count))
        start += count
    y = torch.as_tensor(data.y[data.train][order])

    def load_pilot(fl: FederatedLearning) -> FederatedLearning:
        return fl.load_data(
            (x[order], y),
            num_clients=5,
            partition=lambda *_: positions,
            test_data=(x_test, torch.as_tensor(data.y[data.test])),
        )

    pilot = {
        mode: per_round(
            lambda: make_model("logistic", x.shape[1], 0),
            load_pilot,
            mode == "he",
            clients_per_round=5,
            task="binary",
            pos_weight=pos_weight,
            batch_size=64,
            learning_rate=0.01,
        )
        for mode in ("he", "plain")
    }
    out["finance_pilot"] = {
        "he_round_s": _stats(pilot["he"]),
        "plain_round_s": _stats(pilot["plain"]),
    }
    for entry in out.values():
        entry["slowdown"] = entry["he_round_s"]["median"] / entry["plain_round_s"]["median"]
    return out


def run_bench(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    config.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "schema": "he-agg-bench/1",
        "environment": environment(),
        "repeats": config.repeats,
        "cells": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="he-agg-bench-") as folder,
        Progress(disable=not progress) as bar,
    ):
        task = bar.add_task("starting the aggregator and committee", total=None)
        harness = _Harness(Path(folder), max(config.clients), max(config.sizes))
        result["parameter_set"] = harness.params.describe()
        cells = [(s, k) for s in config.sizes for k in config.clients]
        bar.update(task, total=len(cells) + int(config.slowdowns), description="bench grid")
        try:
            for size, clients in cells:
                vector = np.random.default_rng(size).uniform(-1, 1, size)
                threads, repeats = config.upload_threads, config.repeats
                he = _repeat(partial(_ckks_round, harness, vector, clients, threads), repeats)
                plain = _repeat(partial(_plain_round, harness, vector, clients, threads), repeats)
                nvflare = _repeat(partial(_tenseal, size, clients, [60, 40, 40]), repeats)
                depth0 = _repeat(partial(_tenseal, size, clients, [60, 40]), repeats)
                result["cells"].append(
                    {
                        "parameters": size,
                        "clients": clients,
                        "he_agg": he,
                        "plaintext": plain,
                        "tenseal_nvflare": nvflare,
                        "tenseal_depth0": depth0,
                        "ratio_to_plaintext": he["seconds"]["round"]["median"]
                        / plain["seconds"]["round"]["median"],
                    }
                )
                bar.advance(task)
        finally:
            harness.stop()
        if config.slowdowns:
            bar.update(task, description="end-to-end rounds (article CNN, pilot)")
            result["end_to_end"] = _slowdowns(config.repeats)
            bar.advance(task)
    (config.out / "suite.json").write_text(json.dumps(result, indent=2) + "\n")
    from clients.bench_report import write_bench_report

    write_bench_report(result, config.out)
    return result
