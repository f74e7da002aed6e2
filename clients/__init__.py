"""The participant side of he-agg.

The top level is the participant SDK (``participant``, ``admin``, ``upload``) and the
``he-agg`` command line (``cli``); the apps built on it live in subpackages:
``simulation`` (the ``FederatedLearning`` API), ``pilot`` (the finance pilot), ``bench``
(the HE-overhead benchmark) and ``harness`` (a whole federation of local processes).
The SDK modules import none of the apps.
"""

from typing import Any

__all__ = ["FederatedLearning"]


def __getattr__(name: str) -> Any:  # lazy: importing torch is slow and most users need less
    if name == "FederatedLearning":
        from clients.simulation import FederatedLearning

        return FederatedLearning
    raise AttributeError(name)
