"""End-to-end slowdown for ``he-agg bench``: whole federated rounds through the service,
HE against plaintext, for the article's CNN and for the pilot's logistic regression."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from clients.pilot.pilot_data import load_lending_club
from clients.pilot.shared import make_model, standardise
from clients.simulation.datasets import ArticleCNN, digits_28x28
from clients.simulation.federated import FederatedLearning

__all__ = ["slowdowns"]

Loader = Callable[[FederatedLearning], FederatedLearning]


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
    for entry in out.values():
        entry["slowdown"] = entry["he_round_s"]["median"] / entry["plain_round_s"]["median"]
    return out
