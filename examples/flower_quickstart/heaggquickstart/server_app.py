"""heaggquickstart: a Flower / PyTorch app (the ServerApp).

Flower's quickstart-pytorch ServerApp with ``FedAvg`` swapped for he-agg's
``HeAggFedAvg``: it holds the federation admin's signing key (to open and close he-agg
rounds), never a secret key share, and receives only the committee-decrypted average.
"""

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from clients.flower import HeAggFedAvg
from heaggquickstart.task import Net, load_centralized_dataset, test

# Create ServerApp
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Main entry point for the ServerApp."""

    # Read run config
    fraction_evaluate = float(context.run_config["fraction-evaluate"])
    num_rounds = int(context.run_config["num-server-rounds"])
    lr = float(context.run_config["learning-rate"])
    min_nodes = int(context.run_config["min-nodes"])

    # Load global model
    torch.manual_seed(int(context.run_config["seed"]))
    global_model = Net()
    arrays = ArrayRecord(global_model.state_dict())

    # Initialize the he-agg FedAvg strategy
    strategy = HeAggFedAvg.from_key_file(
        str(context.run_config["he-agg-server"]),
        str(context.run_config["he-agg-federation"]),
        str(context.run_config["he-agg-admin-key"]),  # passphrase: $HE_AGG_PASSPHRASE
        fraction_evaluate=fraction_evaluate,
        min_train_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )

    # Start strategy, run FedAvg for `num_rounds`
    result = strategy.start(
        grid=grid,
        initial_arrays=arrays,
        train_config=ConfigRecord({"lr": lr}),
        num_rounds=num_rounds,
        evaluate_fn=global_evaluate,
    )

    # Save final model to disk
    print("\nSaving final model to disk...")
    state_dict = result.arrays.to_torch_state_dict()
    torch.save(state_dict, str(context.run_config["final-model"]))


def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Evaluate model on central data."""

    # Load the model and initialize it with the received weights
    model = Net()
    model.load_state_dict(arrays.to_torch_state_dict())
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

    # Evaluate the global model on the test set
    test_loss, accuracy = test(model, load_centralized_dataset(), device)
    return MetricRecord({"accuracy": accuracy, "loss": test_loss})
