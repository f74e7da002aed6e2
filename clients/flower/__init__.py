"""he-agg for Flower (``pip install 'he-agg[flower]'``): threshold-HE weighted FedAvg on
Flower's Message API.

Swap ``FedAvg`` for :class:`HeAggFedAvg` in the ServerApp and add :data:`he_agg_mod` to
the ClientApp's mods. Each ClientApp then uploads its model to the he-agg aggregator
encrypted under the collective key and signed with its own key; the he-agg committee
decrypts only the average, and the ServerApp receives only that (docs/flower.md).
"""

from clients.flower.mod import HeAggMod, he_agg_mod
from clients.flower.settings import ClientSettings
from clients.flower.strategy import HeAggFedAvg, RoundOutcome

__all__ = ["ClientSettings", "HeAggFedAvg", "HeAggMod", "RoundOutcome", "he_agg_mod"]
