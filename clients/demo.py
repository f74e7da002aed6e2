"""In-process demonstration of one federated round, every party in protocol order."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from clients.upload import prepare_upload
from he_agg.aggregate import aggregate_uploads
from he_agg.combine import average_from_shares
from he_agg.modarith import F64Array, U64Array
from he_agg.packing import Manifest, flatten, unflatten
from he_agg.params import ParameterSet, derive_parameters
from he_agg.wellformed import NO_ROSTER
from keys.committee import CommitteeSetup, run_committee_setup
from keys.decrypt import decryption_share

__all__ = ["DemoResult", "run_demo"]

FEDERATION = "demo-federation"


@dataclass(frozen=True)
class DemoResult:
    max_error: float
    value_range: float
    parameters: int
    upload_bytes: int
    seconds: dict[str, float]


def _client_updates(clients: int, seed: int) -> list[tuple[dict[str, np.ndarray], int]]:
    """Small synthetic model updates: a weight matrix, a bias and an integer counter."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(clients):
        update: dict[str, np.ndarray] = {
            "layer.weight": rng.normal(0, 0.1, size=(64, 128)).astype(np.float32),
            "layer.bias": rng.normal(0, 0.1, size=(64,)).astype(np.float32),
            "steps": np.array(5, dtype=np.int64),
        }
        out.append((update, int(rng.integers(20, 200))))
    return out


def _encrypt_all(
    updates: list[tuple[dict[str, np.ndarray], int]], setup: CommitteeSetup, console: Console
) -> tuple[list[bytes], Manifest]:
    blobs = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("clients encrypt", total=len(updates))
        for index, (update, samples) in enumerate(updates):
            blob, manifest = prepare_upload(
                update,
                samples,
                setup.public,
                federation=FEDERATION,
                round=1,
                client=f"bank-{index}",
                roster_digest=NO_ROSTER,  # in process: nothing checks the proofs' context
            )
            blobs.append(blob)
            bar.advance(task)
    return blobs, manifest


def _decrypt_with(
    setup: CommitteeSetup, aggregate: U64Array, decryption_set: tuple[int, ...], size: int
) -> F64Array:
    """Every member of ``decryption_set`` contributes its share; anyone can then finish."""
    params = setup.public.params
    digest = hashlib.sha256(aggregate.tobytes()).digest()
    shares = [
        decryption_share(
            setup.members[k - 1].threshold_share, aggregate[:, 1], decryption_set, params, digest
        )
        for k in decryption_set
    ]
    return average_from_shares(aggregate[:, 0], shares, params, size)


def run_demo(
    params: ParameterSet | None = None,
    clients: int = 10,
    members: int = 5,
    threshold: int = 3,
    seed: int = 0,
    console: Console | None = None,
) -> DemoResult:
    console = console or Console()
    if params is None:  # sized for the demo: its sums stay below 2^14
        params = derive_parameters("demo", k_max=clients, committee_max=members, value_bits=14)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    setup = run_committee_setup(params, FEDERATION, members, threshold)
    seconds["committee setup (DKG + dealing)"] = time.perf_counter() - start

    updates = _client_updates(clients, seed)
    start = time.perf_counter()
    blobs, manifest = _encrypt_all(updates, setup, console)
    seconds["encrypt (all clients)"] = time.perf_counter() - start

    start = time.perf_counter()
    aggregate = aggregate_uploads(blobs, params, federation=FEDERATION, round=1)
    seconds["aggregate"] = time.perf_counter() - start

    vectors = [flatten(update)[0] for update, _ in updates]
    weights = np.array([samples for _, samples in updates], dtype=np.float64)
    truth = np.average(np.stack(vectors), axis=0, weights=weights)

    start = time.perf_counter()
    average = _decrypt_with(setup, aggregate, tuple(range(1, threshold + 1)), manifest.size)
    seconds["threshold decrypt + decode"] = time.perf_counter() - start
    model = unflatten(average, manifest)
    subsets = list(combinations(range(1, members + 1), threshold))
    max_error = max(
        float(np.abs(_decrypt_with(setup, aggregate, s, manifest.size) - truth).max())
        for s in subsets
    )
    result = DemoResult(max_error, float(np.ptp(truth)), manifest.size, len(blobs[0]), seconds)
    _print(console, result, params, (clients, members, threshold, len(subsets)))
    console.print(f"integer buffer 'steps' after averaging: {int(model['steps'])}")
    return result


def _print(
    console: Console, result: DemoResult, params: ParameterSet, shape: tuple[int, int, int, int]
) -> None:
    clients, members, threshold, subsets = shape
    table = Table(title=f"he-agg demo: {clients} clients, committee {threshold}-of-{members}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, value in result.seconds.items():
        table.add_row(stage, f"{value:.3f}")
    console.print(table)
    console.print(
        f"parameter set {params.name}: N={params.poly_degree}, "
        f"log2 q={sum(params.prime_bits)}, σ_flood=2^{params.flood_bits}"
    )
    console.print(
        f"parameters per client: {result.parameters}, upload {result.upload_bytes} bytes "
        f"({result.upload_bytes / result.parameters:.1f} B/param)"
    )
    console.print(
        f"max |HE FedAvg − numpy FedAvg| over all {subsets} decryption sets of "
        f"{threshold} members: {result.max_error:.3e} (value range {result.value_range:.3f})"
    )
