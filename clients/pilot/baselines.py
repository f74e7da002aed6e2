"""The pilot's comparisons, trained in this process with the banks' seeds: plaintext FedAvg,
centralised training, each bank alone, and DP-FedAvg at a few noise levels."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from clients.pilot.results import PilotResult
from clients.pilot.shared import MODELS, make_model, standardise
from clients.simulation.dp import DPConfig
from clients.simulation.federated import FederatedLearning, History
from clients.simulation.training import LocalConfig, evaluate, local_seed, train_local

__all__ = ["held_out", "run_baselines"]


def held_out(result: PilotResult) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The held-out loans standardised by the federated statistics; the positive-class weight."""
    data = result.data
    x, pos_weight = standardise(data.x[data.test], result.stats)
    return x, torch.as_tensor(data.y[data.test]), pos_weight


@dataclass(frozen=True)
class _Rows:
    """The banks' rows, standardised like the banks do it, and each bank's positions in them."""

    x: torch.Tensor
    y: torch.Tensor
    positions: list[np.ndarray]
    x_test: torch.Tensor
    y_test: torch.Tensor
    local: LocalConfig


def _rows(result: PilotResult) -> _Rows:
    data = result.data
    rows = np.concatenate([data.bank_rows(b) for b in data.bank_names])
    x, _ = standardise(data.x[rows], result.stats)
    positions, start = [], 0
    for bank in data.bank_names:
        count = len(data.bank_rows(bank))
        positions.append(np.arange(start, start + count))
        start += count
    x_test, y_test, pos_weight = held_out(result)
    local = dataclasses.replace(result.config.local, pos_weight=pos_weight, task="binary")
    return _Rows(x, torch.as_tensor(data.y[rows]), positions, x_test, y_test, local)


def _federated(result: PilotResult, rows: _Rows, name: str, **options: Any) -> History:
    """FedAvg through the simulation API, every bank in every round (plaintext or DP)."""
    config, local, banks = result.config, rows.local, len(rows.positions)
    fl = FederatedLearning(
        make_model(name, rows.x.shape[1], config.seed),
        num_rounds=config.rounds,
        clients_per_round=banks,
        local_epochs=local.epochs,
        batch_size=local.batch_size,
        learning_rate=local.learning_rate,
        optimizer=local.optimizer,
        task="binary",
        pos_weight=local.pos_weight,
        seed=config.seed,
        show_progress=False,
        **options,
    )
    fl.load_data(
        (rows.x, rows.y),
        num_clients=banks,
        partition=lambda *_: rows.positions,
        test_data=(rows.x_test, rows.y_test),
    )
    return fl.train()


def _alone(
    result: PilotResult, rows: _Rows, name: str, train: np.ndarray, index: int
) -> list[dict[str, Any]]:
    """Local training on ``train`` only (one bank, or every row: centralised)."""
    seed = result.config.seed
    model = make_model(name, rows.x.shape[1], seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    records = []
    x, y = rows.x[train], rows.y[train]
    for r in range(1, result.config.rounds + 1):
        state, _ = train_local(model, state, x, y, rows.local, local_seed(seed, r, index))
        records.append({"round": r, **evaluate(model, state, rows.x_test, rows.y_test, rows.local)})
    return records


def _dp_points(result: PilotResult, rows: _Rows, name: str) -> list[tuple[float, float, float]]:
    """(σ, ε after all rounds, final AUC) for each noise multiplier."""
    points = []
    for sigma in result.config.dp_noise:
        history = _federated(result, rows, name, dp=DPConfig(result.config.dp_clip, sigma))
        final = history.rounds[-1]
        points.append((sigma, float(final.epsilon or math.inf), float(final.metrics["auc"])))
    return points


def run_baselines(result: PilotResult, console: Console) -> None:
    rows = _rows(result)
    banks = result.data.bank_names
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("baselines (same seeds)", total=len(MODELS) * (3 + len(banks)))
        for name in MODELS:
            result.plain[name] = _federated(result, rows, name, secure=False)
            bar.advance(task)
            result.central[name] = _alone(result, rows, name, np.arange(len(rows.x)), 0)
            bar.advance(task)
            result.alone[name] = {}
            for index, bank in enumerate(banks):
                result.alone[name][bank] = _alone(result, rows, name, rows.positions[index], index)
                bar.advance(task)
            result.dp[name] = _dp_points(result, rows, name)
            bar.advance(task)
