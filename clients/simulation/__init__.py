"""The founding article's simulation API on the real protocol:
``FederatedLearning(model).load_data(dataset).train()``, with differential privacy,
data partitions, and the local training both the simulation and the pilot run."""

from clients.simulation.dp import DPConfig
from clients.simulation.federated import FederatedLearning, History, RoundRecord
from clients.simulation.partition import partition_indices

__all__ = ["DPConfig", "FederatedLearning", "History", "RoundRecord", "partition_indices"]
