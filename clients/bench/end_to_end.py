"""End-to-end slowdown for ``he-agg bench``: whole federated rounds through the service,
HE against plaintext, for the article's CNN, for the pilot's logistic regression, and for
a workload whose local training takes seconds per round (a ResNet-18 on synthetic
32×32 images, offline): the like-for-like comparison with NVFlare's 2.7× on CIFAR-10."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from clients.pilot.pilot_data import load_lending_club
from clients.pilot.shared import make_model, standardise
from clients.simulation.datasets import ArticleCNN, digits_28x28
from clients.simulation.federated import FederatedLearning

__all__ = ["slowdowns"]

Loader = Callable[[FederatedLearning], FederatedLearning]


class _Block(nn.Module):
    """ResNet's basic block: two 3×3 convolutions with batch norm, and the shortcut."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False),
            nn.BatchNorm2d(outputs),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32×32 images (CIFAR's stem): 11.2M parameters, no torchvision."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, 64, 3, 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        ]
        width = 64
        for outputs, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_Block(width, outputs, stride), _Block(outputs, outputs, 1)]
            width = outputs
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits


def synthetic_images(count: int = 480, seed: int = 0) -> TensorDataset:
    """Images whose class shifts each channel's mean, so a model can learn something."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=generator)
    images = torch.randn(count, 3, 32, 32, generator=generator) * 0.5
    images += (labels.float() / 10).view(-1, 1, 1, 1)
    return TensorDataset(images, labels)


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _per_round(
    make: Callable[[], Any], load: Loader, secure: bool, repeats: int, **options: Any
) -> list[float]:
    """Seconds per round without evaluation, after one unmeasured round (the warm-up)."""
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


def _both(make: Callable[[], Any], load: Loader, repeats: int, **options: Any) -> dict[str, Any]:
    he = _per_round(make, load, True, repeats, **options)
    plain = _per_round(make, load, False, repeats, **options)
    return {"he_round_s": _stats(he), "plain_round_s": _stats(plain)}


def _pilot_loader() -> tuple[Loader, int, float]:
    """The pilot's banks as simulated clients, standardised by the pooled statistics; the
    loader, the feature count and the positive-class weight."""
    data = load_lending_club()
    train = data.x[data.train]
    stats = {
        "mean": train.mean(0),
        "sq": (train**2).mean(0),
        "pos": np.array([data.y[data.train].mean()]),
    }
    x, pos_weight = standardise(train, stats)
    x_test, _ = standardise(data.x[data.test], stats)
    order = np.concatenate(
        [np.flatnonzero(np.isin(data.train, data.bank_rows(b))) for b in data.bank_names]
    )
    positions, start = [], 0
    for bank in data.bank_names:
        count = len(data.bank_rows(bank))
        positions.append(np.arange(start, start + count))
        start += count
    y = torch.as_tensor(data.y[data.train][order])

    def load(fl: FederatedLearning) -> FederatedLearning:
        return fl.load_data(
            (x[order], y),
            num_clients=len(positions),
            partition=lambda *_: positions,
            test_data=(x_test, torch.as_tensor(data.y[data.test])),
        )

    return load, x.shape[1], pos_weight


def slowdowns(repeats: int) -> dict[str, Any]:
    """One round of the article's CNN, and of the pilot's logistic regression, HE through
    the service against plaintext through the same service."""
    torch.manual_seed(0)
    digits = digits_28x28()
    out = {"article_cnn": _both(ArticleCNN, lambda fl: fl.load_data(digits), repeats)}
    load, features, pos_weight = _pilot_loader()
    out["finance_pilot"] = _both(
        lambda: make_model("logistic", features, 0),
        load,
        repeats,
        clients_per_round=5,
        task="binary",
        pos_weight=pos_weight,
        batch_size=64,
        learning_rate=0.01,
    )
    images = synthetic_images()
    out["resnet18_synthetic"] = _both(
        ResNet18,
        lambda fl: fl.load_data(images, num_clients=3),
        repeats,
        batch_size=32,
        learning_rate=0.01,
        optimizer="sgd",
    )
    for entry in out.values():
        entry["slowdown"] = entry["he_round_s"]["median"] / entry["plain_round_s"]["median"]
    return out
