"""The founding article's example, offline: its CNN on digits upsampled to 28×28,
10 rounds, 3 clients per round, every round through encrypted aggregation."""

from clients import FederatedLearning
from clients.simulation.datasets import ArticleCNN, digits_28x28

history = (
    FederatedLearning(ArticleCNN(), num_rounds=10, clients_per_round=3)
    .load_data(digits_28x28())
    .train()
)

for record in history.rounds:
    print(
        f"round {record.round:2d}: accuracy {record.metrics['accuracy']:.3f}, "
        f"uploaded {record.bytes_uploaded / 1e6:.1f} MB, "
        f"{sum(record.seconds.values()):.1f} s"
    )
