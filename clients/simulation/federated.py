"""The founding article's simulation API, running the real protocol.

    FederatedLearning(model, num_rounds=10, clients_per_round=3).load_data(ds).train()

By default every party runs in this process: a DKG committee, clients that encrypt under
the collective key, aggregation of ciphertexts, threshold decryption. ``transport="http"``
runs the same rounds through the REST service, with uvicorn and the committee members as
separate processes on loopback. ``secure=False`` is plaintext FedAvg with the same seeds.
"""

from __future__ import annotations

import copy
import hashlib
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import Dataset

from clients.dp import DPConfig, clip_and_noise, epsilon
from clients.training import LocalConfig, evaluate, local_seed, train_local
from clients.upload import prepare_upload
from he_agg.aggregate import aggregate_uploads
from he_agg.encoding import decode_aggregate
from he_agg.errors import PackingError
from he_agg.packing import flatten, unflatten, weighted_average
from he_agg.params import ParameterSet, derive_parameters

__all__ = ["FederatedLearning", "History", "RoundRecord", "partition_indices"]

Partition = str | Callable[[npt.NDArray[Any], int, np.random.Generator], list[npt.NDArray[Any]]]
VALUE_LIMIT = 16.0  # |model value| a client may upload; clear error beyond it


@dataclass
class RoundRecord:
    round: int
    clients: list[int]
    train_loss: float
    metrics: dict[str, float]
    bytes_uploaded: int
    seconds: dict[str, float]
    epsilon: float | None = None


@dataclass
class History:
    rounds: list[RoundRecord] = field(default_factory=list)
    final_state: dict[str, torch.Tensor] = field(default_factory=dict)

    def metric(self, name: str) -> list[float]:
        return [r.metrics[name] for r in self.rounds]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rounds]


def partition_indices(
    labels: npt.NDArray[Any],
    num_clients: int,
    partition: Partition,
    rng: np.random.Generator,
    alpha: float = 0.5,
) -> list[npt.NDArray[Any]]:
    """Split sample indices among clients: IID, Dirichlet(α) over labels, or a callable."""
    if callable(partition):
        parts = [np.asarray(p) for p in partition(labels, num_clients, rng)]
    elif partition == "iid":
        parts = list(np.array_split(rng.permutation(len(labels)), num_clients))
    elif partition == "dirichlet":
        parts_lists: list[list[int]] = [[] for _ in range(num_clients)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet([alpha] * num_clients)
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts_lists[client].extend(chunk.tolist())
        parts = [np.array(sorted(p), dtype=np.int64) for p in parts_lists]
    else:
        raise ValueError(f"partition must be 'iid', 'dirichlet' or a callable, not {partition!r}")
    if len(parts) != num_clients or any(len(p) == 0 for p in parts):
        raise ValueError(
            "the partition left a client without data; use fewer clients or a larger α"
        )
    return parts


def _as_tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(dataset, tuple) and len(dataset) == 2:
        x, y = dataset
        return torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(y))
    if isinstance(dataset, Dataset):
        xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)  # type: ignore[arg-type]
        return torch.stack([torch.as_tensor(x) for x in xs]).float(), torch.as_tensor(ys)
    raise TypeError("dataset must be a torch Dataset or an (x, y) pair of arrays")


class FederatedLearning:
    def __init__(
        self,
        model: nn.Module,
        num_rounds: int = 10,
        clients_per_round: int = 3,
        *,
        local_epochs: int = 1,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        optimizer: str = "adam",
        task: str = "multiclass",
        pos_weight: float | None = None,
        secure: bool = True,
        transport: str = "inprocess",
        members: int = 3,
        threshold: int = 2,
        dp: DPConfig | None = None,
        seed: int = 0,
        show_progress: bool = True,
    ) -> None:
        if num_rounds < 1 or clients_per_round < 1:
            raise ValueError("num_rounds and clients_per_round must be ≥ 1")
        if transport not in ("inprocess", "http"):
            raise ValueError("transport is 'inprocess' or 'http'")
        if not 1 <= threshold <= members:
            raise ValueError("need 1 ≤ threshold ≤ members")
        self.model = model
        self.num_rounds = num_rounds
        self.clients_per_round = clients_per_round
        self.config = LocalConfig(
            local_epochs, batch_size, learning_rate, optimizer, pos_weight, task
        )
        self.secure, self.transport = secure, transport
        self.members, self.threshold = members, threshold
        self.dp, self.seed, self.show_progress = dp, seed, show_progress
        self.params: ParameterSet | None = None
        self._client_data: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None

    # ---- data --------------------------------------------------------------------
    def load_data(
        self,
        dataset: Any,
        num_clients: int = 10,
        partition: Partition = "iid",
        *,
        alpha: float = 0.5,
        test_fraction: float = 0.2,
        test_data: Any = None,
    ) -> FederatedLearning:
        """Split ``dataset`` among ``num_clients``; hold out a test set unless one is given."""
        x, y = _as_tensors(dataset)
        rng = np.random.default_rng(self.seed)
        if test_data is None:
            order = rng.permutation(len(x))
            cut = round(len(x) * test_fraction)
            test, train = order[:cut], order[cut:]
            self._test = (x[test], y[test])
            x, y = x[train], y[train]
        else:
            self._test = _as_tensors(test_data)
        if num_clients < self.clients_per_round:
            raise ValueError("num_clients must be at least clients_per_round")
        parts = partition_indices(y.numpy(), num_clients, partition, rng, alpha)
        self._client_data = [(x[torch.as_tensor(p)], y[torch.as_tensor(p)]) for p in parts]
        return self

    def client_data(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self._client_data

    # ---- training ------------------------------------------------------------------
    def _parameters(self) -> ParameterSet:
        """Derived for this run: K = clients per round, weights ≤ 1, |values| ≤ VALUE_LIMIT."""
        value_bits = math.ceil(math.log2(self.clients_per_round * VALUE_LIMIT)) + 1
        return derive_parameters(
            "simulation",
            k_max=max(self.clients_per_round, 2),
            committee_max=self.members,
            value_bits=value_bits,
            precision_bits=36,
        )

    def train(self) -> History:
        if not self._client_data:
            raise ValueError("call load_data() before train()")
        self.params = self._parameters()
        aggregator = self._aggregator()
        try:
            return self._rounds(aggregator)
        finally:
            aggregator.close()

    def _aggregator(self) -> _Aggregator:
        if not self.secure:
            return _PlainAggregator()
        assert self.params is not None
        if self.transport == "http":
            return _HttpAggregator(
                self.params,
                len(self._client_data),
                self.clients_per_round,
                self.members,
                self.threshold,
            )
        return _InProcessAggregator(self.params, self.members, self.threshold)

    def _rounds(self, aggregator: _Aggregator) -> History:
        history = History()
        state = copy.deepcopy(self.model.state_dict())
        sizes = [len(x) for x, _ in self._client_data]
        unit = float(max(sizes))
        rng = np.random.default_rng(self.seed + 1)
        work_model = copy.deepcopy(self.model)
        with Progress(disable=not self.show_progress, transient=True) as bar:
            task = bar.add_task("federated rounds", total=self.num_rounds)
            for number in range(1, self.num_rounds + 1):
                chosen = sorted(rng.choice(len(sizes), self.clients_per_round, replace=False))
                seconds: dict[str, float] = {}
                start = time.perf_counter()
                updates, losses = [], []
                for client in chosen:
                    x, y = self._client_data[client]
                    new, loss = train_local(
                        work_model,
                        state,
                        x,
                        y,
                        self.config,
                        local_seed(self.seed, number, int(client)),
                    )
                    updates.append(new)
                    losses.append(loss)
                seconds["train"] = time.perf_counter() - start
                if self.dp is not None:
                    vectors = self._private_updates(state, updates)
                    weights = [1.0] * len(vectors)
                else:
                    vectors = [_checked(flatten(u)[0]) for u in updates]
                    weights = [sizes[c] / unit for c in chosen]
                average, uploaded, stage_seconds = aggregator.average(
                    number, [f"client-{c}" for c in chosen], vectors, weights
                )
                seconds.update(stage_seconds)
                manifest = flatten(state)[1]
                if self.dp is not None:
                    average = flatten(state)[0] + average
                state = unflatten(average, manifest)
                start = time.perf_counter()
                assert self._test is not None
                metrics = evaluate(work_model, state, *self._test, self.config)
                metrics.pop("scores", None)
                seconds["evaluate"] = time.perf_counter() - start
                history.rounds.append(
                    RoundRecord(
                        number,
                        [int(c) for c in chosen],
                        float(np.mean(losses)),
                        metrics,
                        uploaded,
                        seconds,
                        self._epsilon(number, len(sizes)),
                    )
                )
                bar.advance(task)
        history.final_state = state
        return history

    def _private_updates(
        self, state: dict[str, torch.Tensor], updates: list[dict[str, torch.Tensor]]
    ) -> list[npt.NDArray[np.float64]]:
        assert self.dp is not None
        base = flatten(state)[0]
        return [
            _checked(clip_and_noise(flatten(u)[0] - base, self.dp, len(updates))) for u in updates
        ]

    def _epsilon(self, rounds: int, population: int) -> float | None:
        if self.dp is None:
            return None
        return epsilon(
            self.dp.noise_multiplier, self.clients_per_round / population, rounds, self.dp.delta
        )


def _checked(vector: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    peak = float(np.abs(vector).max(initial=0.0))
    if peak > VALUE_LIMIT:
        raise PackingError(
            f"a model value reaches {peak:.3g}; the simulation's parameter set "
            f"carries values up to ±{VALUE_LIMIT}"
        )
    return vector


class _Aggregator:
    def average(
        self,
        round_number: int,
        names: Sequence[str],
        vectors: list[npt.NDArray[np.float64]],
        weights: list[float],
    ) -> tuple[npt.NDArray[np.float64], int, dict[str, float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _PlainAggregator(_Aggregator):
    """Plaintext FedAvg in float64: the baseline with the same seeds."""

    def average(
        self,
        round_number: int,
        names: Sequence[str],
        vectors: list[npt.NDArray[np.float64]],
        weights: list[float],
    ) -> tuple[npt.NDArray[np.float64], int, dict[str, float]]:
        start = time.perf_counter()
        average = np.average(np.stack(vectors), axis=0, weights=weights)
        uploaded = sum(4 * (v.size + 1) for v in vectors)  # float32 [w, w·x]
        return average, uploaded, {"aggregate": time.perf_counter() - start}


def _as_update(vector: npt.NDArray[np.float64]) -> dict[str, npt.NDArray[np.float64]]:
    return {"values": vector}


class _InProcessAggregator(_Aggregator):
    """Every party in this process, every message through its wire format."""

    def __init__(self, params: ParameterSet, members: int, threshold: int) -> None:
        from keys.committee import run_committee_setup

        self.params = params
        self.setup = run_committee_setup(params, "simulation", members, threshold)

    def average(
        self,
        round_number: int,
        names: Sequence[str],
        vectors: list[npt.NDArray[np.float64]],
        weights: list[float],
    ) -> tuple[npt.NDArray[np.float64], int, dict[str, float]]:
        from he_agg.combine import combine
        from keys.decrypt import decryption_share

        seconds: dict[str, float] = {}
        start = time.perf_counter()
        blobs = [
            prepare_upload(
                _as_update(v),
                w,
                self.setup.public,
                federation="simulation",
                round=round_number,
                client=name,
            )[0]
            for name, v, w in zip(names, vectors, weights, strict=True)
        ]
        seconds["encrypt"] = time.perf_counter() - start
        start = time.perf_counter()
        aggregate = aggregate_uploads(
            blobs, self.params, federation="simulation", round=round_number
        )
        seconds["aggregate"] = time.perf_counter() - start
        start = time.perf_counter()
        digest = hashlib.sha256(aggregate.tobytes()).digest()
        subset = tuple(range(1, self.setup.threshold + 1))
        shares = [
            decryption_share(
                self.setup.members[k - 1].threshold_share,
                aggregate[:, 1],
                subset,
                self.params,
                digest,
            )
            for k in subset
        ]
        plain = combine(aggregate[:, 0], shares, self.params)
        average = weighted_average(decode_aggregate(plain, self.setup.public.seal), vectors[0].size)
        seconds["decrypt"] = time.perf_counter() - start
        return average, sum(len(b) for b in blobs), seconds


class _HttpAggregator(_Aggregator):
    """The REST stack: uvicorn and the committee as processes, clients over loopback HTTP.
    With ``mode="plaintext"`` the same server takes float32 updates (the baseline)."""

    def __init__(
        self, params: ParameterSet, clients: int, per_round: int, members: int, threshold: int
    ) -> None:
        from clients.local import LocalFederation

        self.folder = tempfile.TemporaryDirectory(prefix="he-agg-sim-")
        self.local = LocalFederation(
            Path(self.folder.name),
            "simulation",
            [f"client-{i}" for i in range(clients)],
            params=params,
            members=members,
            threshold=threshold,
            k_min=per_round,
        )
        self.local.start()

    def average(
        self,
        round_number: int,
        names: Sequence[str],
        vectors: list[npt.NDArray[np.float64]],
        weights: list[float],
    ) -> tuple[npt.NDArray[np.float64], int, dict[str, float]]:
        seconds: dict[str, float] = {}
        number = self.local.admin_api().open_round("simulation", 3600)["number"]
        start = time.perf_counter()
        uploaded = 0
        for name, vector, weight in zip(names, vectors, weights, strict=True):
            receipt = self.local.participant(name).submit(_as_update(vector), weight, round=number)
            uploaded += int(receipt["size"])
        seconds["encrypt+upload"] = time.perf_counter() - start
        start = time.perf_counter()
        self.local.admin_api().close_round("simulation", number)
        model = self.local.participant(names[0]).wait_for_model(number, timeout=300, poll=0.1)
        seconds["aggregate+decrypt"] = time.perf_counter() - start
        return np.asarray(model["values"], dtype=np.float64), uploaded, seconds

    def close(self) -> None:
        self.local.stop()
        self.folder.cleanup()
