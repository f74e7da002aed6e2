"""Local training and evaluation, deterministic for a given seed.

The same functions run inside a bank's process (HE-FedAvg over HTTP) and in-process
(plaintext FedAvg, centralised, bank alone), so runs with the same seeds follow the same
path and differ only by what aggregation adds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

__all__ = [
    "LocalConfig",
    "evaluate",
    "local_seed",
    "logistic_regression",
    "mlp",
    "train_local",
]


@dataclass(frozen=True)
class LocalConfig:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adam"
    pos_weight: float | None = None  # binary tasks: weight of the positive class
    task: str = "multiclass"  # "multiclass" or "binary"


def local_seed(base: int, round_number: int, client: int) -> int:
    return (base * 1_000_003 + round_number * 10_007 + client) % (2**31)


def logistic_regression(features: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 1))


def mlp(features: int, hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def _loss(config: LocalConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if config.task == "binary":
        weight = None if config.pos_weight is None else torch.tensor([config.pos_weight])
        bce = nn.BCEWithLogitsLoss(pos_weight=weight)
        return lambda logits, y: bce(logits.reshape(-1), y.float().reshape(-1))
    cross_entropy = nn.CrossEntropyLoss()
    return lambda logits, y: cross_entropy(logits, y.long())


def train_local(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    config: LocalConfig,
    seed: int,
) -> tuple[dict[str, torch.Tensor], float]:
    """Start from ``state``, train for ``config.epochs``; returns the new state and mean loss."""
    torch.manual_seed(seed)
    model.load_state_dict(state)
    model.train()
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            model.parameters(), lr=config.learning_rate
        )
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9)
    loss_fn = _loss(config)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(float(loss.detach()))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, float(np.mean(losses))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    config: LocalConfig,
) -> dict[str, Any]:
    """Loss and accuracy (multiclass) or AUC and PR-AUC (binary) of a state on (x, y)."""
    model.load_state_dict(state)
    model.eval()
    logits = model(x)
    loss = float(_loss(config)(logits, y))
    if config.task == "binary":
        scores = torch.sigmoid(logits.reshape(-1)).numpy()
        labels = y.numpy().astype(int)
        return {
            "loss": loss,
            "auc": float(roc_auc_score(labels, scores)),
            "pr_auc": float(average_precision_score(labels, scores)),
            "scores": scores,
        }
    accuracy = float((logits.argmax(dim=1) == y.long()).float().mean())
    return {"loss": loss, "accuracy": accuracy}
