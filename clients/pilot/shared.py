"""What the pilot's coordinator and every bank agree on: how to load the data, the round
schedule, the models, and standardisation from the federated statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clients.pilot.pilot_data import CsvSpec, PilotData, load_csv, load_lending_club
from clients.simulation.training import logistic_regression, mlp

__all__ = ["MODELS", "STATS_ROUND", "load_data", "make_model", "standardise"]

STATS_ROUND = 1  # the first round averages per-bank feature statistics, not a model
MODELS = ("logistic", "mlp")  # trained in this order, one after the other


def load_data(spec: dict[str, Any], seed: int) -> PilotData:
    """``{"kind": "lending_club"}`` or ``{"kind": "csv", "path", "target", "bank_column"}``
    with optional ``positive``, ``impute`` and ``min_bank_rows`` (``CsvSpec``'s fields)."""
    if spec["kind"] == "csv":
        fields = {k: v for k, v in spec.items() if k != "kind"}
        return load_csv(CsvSpec(**{**fields, "path": Path(spec["path"])}), seed)
    return load_lending_club(seed)


def make_model(name: str, features: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return logistic_regression(features) if name == "logistic" else mlp(features)


def standardise(x: np.ndarray, stats: dict[str, Any]) -> tuple[torch.Tensor, float]:
    """Features scaled by the federated mean and deviation; the positive-class weight."""
    mean = np.asarray(stats["mean"], dtype=np.float64)
    second = np.asarray(stats["sq"], dtype=np.float64)
    deviation = np.sqrt(np.maximum(second - mean**2, 1e-12))
    positive = float(np.asarray(stats["pos"]).reshape(-1)[0])
    scaled = torch.as_tensor((x - mean) / deviation, dtype=torch.float32)
    return scaled, (1.0 - positive) / max(positive, 1e-6)
