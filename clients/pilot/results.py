"""The pilot's configuration and everything one run measures; the coordinator fills a
:class:`PilotResult` and the report reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients.pilot.pilot_data import PilotData
from clients.simulation.federated import History
from clients.simulation.training import LocalConfig
from he_agg.params import ParameterSet

__all__ = ["PilotConfig", "PilotResult"]


@dataclass(frozen=True)
class PilotConfig:
    out: Path = Path("pilot-report")
    rounds: int = 8
    seed: int = 0
    data: dict[str, Any] = field(default_factory=lambda: {"kind": "lending_club"})
    local: LocalConfig = field(
        default_factory=lambda: LocalConfig(
            epochs=1, batch_size=64, learning_rate=0.01, optimizer="adam"
        )
    )
    dp_noise: tuple[float, ...] = (0.5, 1.0, 2.0)
    dp_clip: float = 1.0


@dataclass
class PilotResult:
    """Per model name: HE-FedAvg's records per round, its plaintext twin, centralised
    training, each bank alone, and (σ, ε, final AUC) per DP noise level."""

    config: PilotConfig
    data: PilotData
    params: ParameterSet
    he: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    plain: dict[str, History] = field(default_factory=dict)
    central: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    alone: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    dp: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    timings: list[dict[str, Any]] = field(default_factory=list)
    rounds_seconds: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)
