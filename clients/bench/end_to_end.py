"""End-to-end slowdown for ``he-agg bench``: whole federated rounds through the service,
HE against plaintext, for the article's CNN, for the pilot's logistic regression, and for
a workload whose local training takes seconds per round (a ResNet-18 on synthetic
32×32 images, offline): the like-for-like comparison with NVFlare's 2.7× on CIFAR-10."""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from clients.pilot.pilot_data import load_lending_club
from clients.pilot.shared import make_model, standardise
from clients.simulation.datasets import ArticleCNN, digits_28x28
from clients.simulation.federated import FederatedLearning

__all__ = ["PHASES", "round_phases", "slowdowns"]

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


# the server's log events that mark a CKKS round's critical path, in order; each phase
# ends at the last event of its kind (the last upload, endorsement or share)
PHASES = (
    ("uploads", "round opened", "upload stored"),
    ("close_to_set", "upload stored", "decryption set named"),
    ("endorsements", "decryption set named", "endorsement stored"),
    ("shares", "endorsement stored", "decryption share stored"),
    ("combine_publish", "decryption share stored", "model published"),
)


def _event_times(log: Path) -> dict[int, dict[str, float]]:
    """Round → event → the time of its last occurrence (epoch seconds), from the server's
    JSON-lines log (he_agg.server.logs: UTC to the millisecond)."""
    rounds: dict[int, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # uvicorn's own lines
        if not isinstance(entry, dict) or not isinstance(entry.get("round"), int):
            continue
        stamp = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        when = stamp.replace(tzinfo=UTC).timestamp()
        rounds.setdefault(entry["round"], {})[entry["event"]] = when
    return rounds


def round_phases(log: Path, skip: int = 1) -> dict[str, dict[str, float]]:
    """Seconds of each critical-path phase (PHASES), over the rounds after the first
    ``skip`` (the warm-up); a phase whose events are missing is left out."""
    phases: dict[str, list[float]] = {name: [] for name, _, _ in PHASES}
    for number, events in sorted(_event_times(log).items()):
        if number <= skip:
            continue
        for name, begin, end in PHASES:
            if begin in events and end in events:
                phases[name].append(events[end] - events[begin])
    return {name: _stats(values) for name, values in phases.items() if values}


def _per_round(make: Callable[[], Any], load: Loader, repeats: int, **options: Any) -> list[float]:
    """Seconds per round without evaluation, after one unmeasured round (the warm-up)."""
    fl = FederatedLearning(make(), num_rounds=repeats + 1, show_progress=False, **options)
    history = load(fl).train()
    return [sum(v for k, v in r.seconds.items() if k != "evaluate") for r in history.rounds[1:]]


def _compared(
    make: Callable[[], Any], load: Loader, repeats: int, **options: Any
) -> dict[str, Any]:
    """One workload four ways, same seeds: HE with proofs of well-formed uploads and
    without, through the service; plaintext FedAvg through the same kind of server (the
    like-for-like baseline) and averaged in this process (the pure-compute one)."""
    with tempfile.TemporaryDirectory(prefix="he-agg-e2e-") as logs:
        he = _per_round(make, load, repeats, transport="http", log_dir=logs, **options)
        phases = round_phases(Path(logs) / "server.log")
    no_proofs = _per_round(make, load, repeats, transport="http", proofs=False, **options)
    plain = _per_round(make, load, repeats, transport="http", secure=False, **options)
    local = _per_round(make, load, repeats, transport="inprocess", secure=False, **options)
    rounds = {"he": he, "he_no_proofs": no_proofs, "plain": plain, "plain_inprocess": local}
    medians = {name: statistics.median(values) for name, values in rounds.items()}
    out: dict[str, Any] = {f"{name}_round_s": _stats(values) for name, values in rounds.items()}
    out["he_phases_s"] = phases
    out["slowdown"] = medians["he"] / medians["plain"]
    out["slowdown_no_proofs"] = medians["he_no_proofs"] / medians["plain"]
    out["slowdown_inprocess"] = medians["he"] / medians["plain_inprocess"]
    return out


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
    """Rounds of the article's CNN, of the pilot's logistic regression and of a ResNet-18,
    HE through the service against plaintext through the same kind of server (and in
    this process), with the HE round's critical path from the server's log."""
    torch.manual_seed(0)
    digits = digits_28x28()
    out = {"article_cnn": _compared(ArticleCNN, lambda fl: fl.load_data(digits), repeats)}
    load, features, pos_weight = _pilot_loader()
    out["finance_pilot"] = _compared(
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
    out["resnet18_synthetic"] = _compared(
        ResNet18,
        lambda fl: fl.load_data(images, num_clients=3),
        repeats,
        batch_size=32,
        learning_rate=0.01,
        optimizer="sgd",
    )
    return out
