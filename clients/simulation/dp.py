"""Differential privacy for federated rounds: clipping, distributed Gaussian noise, accounting.

Each client clips its update to L2 norm C and adds its share N(0, (σC)²/K) of the noise,
so the sum the committee decrypts carries N(0, (σC)²) and no single party ever sees an
un-noised sum. The accountant is dp-accounting's RDP accountant (Poisson-sampled Gaussian
mechanism, composed over rounds).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["DPConfig", "clip_and_noise", "epsilon"]


@dataclass(frozen=True)
class DPConfig:
    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.clip_norm <= 0 or self.noise_multiplier < 0 or not 0 < self.delta < 1:
            raise ValueError("need clip_norm > 0, noise_multiplier ≥ 0 and 0 < δ < 1")


def clip_and_noise(
    update: npt.NDArray[np.float64], config: DPConfig, clients_in_round: int
) -> npt.NDArray[np.float64]:
    """Clip to norm C, then add this client's 1/K share of the round's Gaussian noise."""
    norm = float(np.linalg.norm(update))
    clipped = update * min(1.0, config.clip_norm / norm) if norm > 0 else update.copy()
    rng = np.random.Generator(np.random.PCG64DXSM(secrets.randbits(128)))
    std = config.noise_multiplier * config.clip_norm / math.sqrt(clients_in_round)
    return clipped + rng.normal(0.0, std, size=update.shape)


def epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """(ε, δ) after ``rounds`` Poisson-sampled Gaussian rounds (RDP accountant)."""
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    import dp_accounting  # slow to import; only the accountant needs it

    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))
