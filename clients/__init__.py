"""The participant side of he-agg: the client SDK, the simulation API and the pilot."""

from typing import Any

__all__ = ["FederatedLearning"]


def __getattr__(name: str) -> Any:  # lazy: importing torch is slow and most users need less
    if name == "FederatedLearning":
        from clients.simulation import FederatedLearning

        return FederatedLearning
    raise AttributeError(name)
