"""The founding article's simulation API, running the real protocol.

    FederatedLearning(model, num_rounds=10, clients_per_round=3).load_data(ds).train()

By default every party runs in this process: a DKG committee, clients that encrypt under
the collective key, aggregation of ciphertexts, threshold decryption. ``transport="http"``
runs the same rounds through the REST service, with uvicorn and the committee members as
separate processes on loopback. ``secure=False`` is plaintext FedAvg with the same seeds:
averaged in this process, or, with ``transport="http"``, uploaded to a plaintext federation
on the same kind of server (the like-for-like baseline for the service's overhead).
Over HTTP every upload carries proofs that it is well formed (the server and the members
check them); ``proofs=False`` leaves them out, which trusts every client to encrypt
honestly (SECURITY.md), as TenSEAL/NVFlare-style deployments do.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rich.progress import Progress
from torch import nn

from clients.simulation.aggregators import (
    Aggregator,
    HttpAggregator,
    InProcessAggregator,
    PlainAggregator,
)
from clients.simulation.dp import DPConfig, clip_and_noise, epsilon
from clients.simulation.partition import Partition, as_tensors, partition_indices
from clients.simulation.training import LocalConfig, evaluate, local_seed, train_local
from he_agg.api.states import FederationMode
from he_agg.errors import PackingError
from he_agg.packing import flatten, unflatten
from he_agg.params import ParameterSet, derive_parameters

__all__ = ["VALUE_LIMIT", "FederatedLearning", "History", "RoundRecord"]

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
        reinitialise: bool = True,
        proofs: bool = True,
        log_dir: str | Path | None = None,
    ) -> None:
        """``seed`` fixes the data split, the client sampling, local shuffles and, with
        ``reinitialise`` (the default), the model's initial weights too: every layer with
        ``reset_parameters`` is re-initialised from it, so two runs with the same seed
        (one with ``secure=False``, say) start from the same model however it was built.
        ``reinitialise=False`` keeps the weights passed in (a pretrained model).
        ``log_dir`` (``transport="http"``) keeps the server's and the members' JSON-lines
        logs there when training ends (``server.log``, ``member-K.log``)."""
        if num_rounds < 1 or clients_per_round < 1:
            raise ValueError("num_rounds and clients_per_round must be ≥ 1")
        if transport not in ("inprocess", "http"):
            raise ValueError("transport is 'inprocess' or 'http'")
        if not 1 <= threshold <= members:
            raise ValueError("need 1 ≤ threshold ≤ members")
        if reinitialise:
            _reinitialise(model, seed)
        self.model = model
        self.num_rounds = num_rounds
        self.clients_per_round = clients_per_round
        self.config = LocalConfig(
            local_epochs, batch_size, learning_rate, optimizer, pos_weight, task
        )
        self.secure, self.transport, self.proofs = secure, transport, proofs
        self.log_dir = None if log_dir is None else Path(log_dir)
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
        x, y = as_tensors(dataset)
        rng = np.random.default_rng(self.seed)
        if test_data is None:
            order = rng.permutation(len(x))
            cut = round(len(x) * test_fraction)
            test, train = order[:cut], order[cut:]
            self._test = (x[test], y[test])
            x, y = x[train], y[train]
        else:
            self._test = as_tensors(test_data)
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
            # proofs guard a server from its clients: in one process nothing verifies them
            proofs=self.transport == "http" and self.secure and self.proofs,
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

    def _aggregator(self) -> Aggregator:
        assert self.params is not None
        if self.transport == "http":
            size = sum(int(v.numel()) for v in self.model.state_dict().values())
            return HttpAggregator(
                self.params,
                len(self._client_data),
                self.clients_per_round,
                self.members,
                self.threshold,
                max_parameters=max(size + 1, 10_000_000),  # the federation's upload limit
                mode=FederationMode.CKKS if self.secure else FederationMode.PLAINTEXT,
                log_dir=self.log_dir,
            )
        if not self.secure:
            return PlainAggregator()
        return InProcessAggregator(self.params, self.members, self.threshold)

    def _rounds(self, aggregator: Aggregator) -> History:
        history = History()
        state = copy.deepcopy(self.model.state_dict())
        rng = np.random.default_rng(self.seed + 1)
        work_model = copy.deepcopy(self.model)
        population = len(self._client_data)
        with Progress(disable=not self.show_progress, transient=True) as bar:
            task = bar.add_task("federated rounds", total=self.num_rounds)
            for number in range(1, self.num_rounds + 1):
                chosen = sorted(rng.choice(population, self.clients_per_round, replace=False))
                state, record = self._round(
                    aggregator, work_model, state, number, [int(c) for c in chosen]
                )
                history.rounds.append(record)
                bar.advance(task)
        history.final_state = state
        return history

    def _round(
        self,
        aggregator: Aggregator,
        work_model: nn.Module,
        state: dict[str, torch.Tensor],
        number: int,
        chosen: list[int],
    ) -> tuple[dict[str, torch.Tensor], RoundRecord]:
        """Local training on the chosen clients, aggregation of their updates, evaluation."""
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        updates, losses = [], []
        for client in chosen:
            x, y = self._client_data[client]
            seed = local_seed(self.seed, number, client)
            new, loss = train_local(work_model, state, x, y, self.config, seed)
            updates.append(new)
            losses.append(loss)
        seconds["train"] = time.perf_counter() - start
        vectors, weights = self._uploads(state, updates, chosen)
        names = [f"client-{c}" for c in chosen]
        average, uploaded, stage_seconds = aggregator.average(number, names, vectors, weights)
        seconds.update(stage_seconds)
        base, manifest = flatten(state)
        if self.dp is not None:
            average = base + average  # DP clients upload deltas from the round's model
        state = unflatten(average, manifest)
        start = time.perf_counter()
        assert self._test is not None
        metrics = evaluate(work_model, state, *self._test, self.config)
        metrics.pop("scores", None)
        seconds["evaluate"] = time.perf_counter() - start
        loss = float(np.mean(losses))
        privacy = self._epsilon(number, len(self._client_data))
        return state, RoundRecord(number, chosen, loss, metrics, uploaded, seconds, privacy)

    def _uploads(
        self,
        state: dict[str, torch.Tensor],
        updates: list[dict[str, torch.Tensor]],
        chosen: list[int],
    ) -> tuple[list[npt.NDArray[np.float64]], list[float]]:
        """Each chosen client's vector and FedAvg weight n_k / (largest n); with DP, its clipped
        and noised delta at weight 1."""
        if self.dp is not None:
            return self._private_updates(state, updates), [1.0] * len(updates)
        sizes = [len(x) for x, _ in self._client_data]
        unit = float(max(sizes))
        return [_checked(flatten(u)[0]) for u in updates], [sizes[c] / unit for c in chosen]

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


def _reinitialise(model: nn.Module, seed: int) -> None:
    """Reset every layer's parameters from ``seed`` (torch's own initialisers), in the
    module order, leaving the global torch generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def _checked(vector: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    peak = float(np.abs(vector).max(initial=0.0))
    if peak > VALUE_LIMIT:
        raise PackingError(
            f"a model value reaches {peak:.3g}; the simulation's parameter set "
            f"carries values up to ±{VALUE_LIMIT}"
        )
    return vector
