"""The quickstart in Flower's simulation engine, twice with the same seeds: through he-agg
and with Flower's plain FedAvg. Prints both final accuracies (`make flower-demo`).

he-agg runs as it would for real, each party its own process on loopback: the aggregator
(uvicorn) and a committee of three member agents (`he-agg committee run`, any two
decrypt), which run the DKG first. The ServerApp gets the admin's key file; the four
ClientApps (partition i is enrolled client ``client-i``) get their own key files.

`run_simulation` passes no run config to the apps, so a small mod hands them the one in
pyproject.toml (with he-agg's addresses and files filled in), as `flwr run` would.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# Ray's workers import the ClientApp's module by name, and run one thread each
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # offline: no usage events,
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")  # and no version check
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.clientapp.typing import ClientAppCallable, Mod  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from heaggquickstart import client_app, server_app  # noqa: E402
from heaggquickstart.task import Net, load_centralized_dataset, test  # noqa: E402

from clients.flower import he_agg_mod  # noqa: E402
from clients.harness.local import LocalFederation  # noqa: E402
from he_agg.params import derive_parameters  # noqa: E402
from keys.identity import save_identity  # noqa: E402

BACKEND: Any = {"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}}


def app_config() -> dict[str, Any]:
    """[tool.flwr.app.config] of pyproject.toml: what `flwr run` would pass."""
    with open(HERE / "pyproject.toml", "rb") as file:
        return dict(tomllib.load(file)["tool"]["flwr"]["app"]["config"])


def with_run_config(config: dict[str, Any]) -> Mod:
    """A mod giving the ClientApp the run config `run_simulation` leaves empty."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        run_config = {**config, **context.run_config}  # Flower forbids changing the original
        return call_next(msg, Context(context.run_id, context.node_id, context.node_config,
                                      context.state, run_config))  # fmt: skip

    return mod


def client(config: dict[str, Any], secure: bool) -> ClientApp:
    """The quickstart's train and evaluate functions, with or without the he-agg mod."""
    mods = [with_run_config(config), *([he_agg_mod] if secure else [])]
    app = ClientApp(mods=mods)
    app.train()(client_app.train)
    app.evaluate()(client_app.evaluate)
    return app


def he_agg_server(config: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = {**config, **context.run_config}
        server_app.main(grid, Context(context.run_id, context.node_id, context.node_config,
                                      context.state, run_config))  # fmt: skip

    return app


def plain_server(config: dict[str, Any]) -> ServerApp:
    """The quickstart ServerApp before the change: Flower's FedAvg."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(int(config["seed"]))
        strategy = FedAvg(
            fraction_evaluate=float(config["fraction-evaluate"]),
            min_train_nodes=int(config["min-nodes"]),
            min_available_nodes=int(config["min-nodes"]),
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(Net().state_dict()),
            train_config=ConfigRecord({"lr": float(config["learning-rate"])}),
            num_rounds=int(config["num-server-rounds"]),
            evaluate_fn=server_app.global_evaluate,
        )
        torch.save(result.arrays.to_torch_state_dict(), str(config["final-model"]))

    return app


def accuracy(model_file: Path) -> float:
    net = Net()
    net.load_state_dict(torch.load(model_file))
    return test(net, load_centralized_dataset(), torch.device("cpu"))[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="default: num-server-rounds")
    parser.add_argument(
        "--no-proofs", action="store_true", help="skip the proofs of well-formed uploads"
    )
    args = parser.parse_args()
    config = app_config()
    if args.rounds:
        config["num-server-rounds"] = args.rounds
    nodes = int(config["min-nodes"])
    params = derive_parameters(
        "flower-quickstart", k_max=nodes, committee_max=3, value_bits=16, proofs=not args.no_proofs
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="he-agg-flower-") as folder:
        root = Path(folder)
        federation = LocalFederation(
            root,
            str(config["he-agg-federation"]),
            [f"client-{i}" for i in range(nodes)],
            params=params,
            members=3,
            threshold=2,
            k_min=nodes - 1,  # one node may drop out
        )
        os.environ["HE_AGG_PASSPHRASE"] = federation.passphrase  # opens every key file
        with federation:
            print(f"he-agg aggregator at {federation.server.url}, committee of 3 keyed (t=2)")
            for name in federation.clients:
                federation.client_key_file(name)  # root/clients/<name>.identity
            save_identity(root / "admin.key", federation.admin, federation.passphrase)
            config |= {
                "he-agg-server": federation.server.url,
                "he-agg-admin-key": str(root / "admin.key"),
                "he-agg-roster": str(federation.roster_file),
                "he-agg-key-dir": str(root / "clients"),
                "he-agg-spool-dir": str(root / "spool"),
            }
            he_config = config | {"final-model": str(root / "he_agg.pt")}
            run_simulation(he_agg_server(he_config), client(he_config, True), nodes, "ray", BACKEND)
        plain_config = config | {"final-model": str(root / "fedavg.pt")}
        run_simulation(
            plain_server(plain_config), client(plain_config, False), nodes, "ray", BACKEND
        )
        he_model, plain_model = torch.load(root / "he_agg.pt"), torch.load(root / "fedavg.pt")
        gap = max(float((he_model[k] - plain_model[k]).abs().max()) for k in he_model)
        print(
            f"\nfinal accuracy on the {len(load_centralized_dataset().dataset)} held-out digits "
            f"after {config['num-server-rounds']} rounds:\n"
            f"  he-agg (threshold-HE FedAvg)  {accuracy(root / 'he_agg.pt'):.3f}\n"
            f"  Flower FedAvg (plaintext)     {accuracy(root / 'fedavg.pt'):.3f}\n"
            f"  max |he-agg − FedAvg| over the model's parameters: {gap:.2g}\n"
            f"  total {time.perf_counter() - started:.0f} s"
        )


if __name__ == "__main__":
    main()
