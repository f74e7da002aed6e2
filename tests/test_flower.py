"""he-agg under Flower's own runtime: ``run_simulation`` (Ray) with the real ServerApp,
ClientApp, FedAvg and records, against a LocalFederation (aggregator and committee as
processes on loopback).

The model is softmax regression on the digits, trained by full-batch gradient descent
in float64 with step η = 1/L, where L = λmax(X̃ᵀX̃)/(2n) bounds the loss's smoothness
(Böhning: the softmax Hessian is at most ½I). A gradient step with η ≤ 2/L on a convex
L-smooth loss is non-expansive in the L2 norm, and so is a weighted average of such maps,
so an error δ_r added to the global model in round r is never amplified by later rounds:

    ‖HE_R − FedAvg_R‖₂ ≤ Σ_r ‖δ_r‖₂ ≤ √d · Σ_r b_r,

with b_r the per-value bound of one he-agg average: the parameter set's z = 7 bound on a
decoded slot of the weighted sum (``ParameterSet.error_bound(t)``, as tests/test_service.py
uses it) divided by Σ n_k, times (1 + max|w|) because the decoded Σ n_k carries the same
error (first order of (S + e_S)/(N + e_N)).

About 100 s on two cores, mostly Ray: each ``run_simulation`` starts and stops a Ray
cluster (about 10 s), and the committee-below-t test waits for the aggregator to give up
on endorsements (10 share timeouts of 5 s).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Result, Strategy
from flwr.simulation import run_simulation
from sklearn.datasets import load_digits

from clients.flower import HeAggFedAvg, HeAggMod
from clients.flower.records import RECEIPT_RECORD, ROUND
from clients.flower.settings import KEY_DIR, ROSTER, SERVER, SPOOL_DIR
from clients.harness.local import LocalFederation
from he_agg.api.states import RoundState
from he_agg.params import derive_parameters

ROOT = Path(__file__).resolve().parent.parent
NODES = 4
THRESHOLD = 2
K_MIN = 3
ROUNDS = 3
STEPS = 5  # gradient steps per round
# K ≤ 4 clients; |n_k·w| ≤ V/K_max with n_k ≈ 450 and |w| < 1 needs V ≥ 2^11: 2^14 leaves room
PARAMS = derive_parameters(
    "flower-test", k_max=NODES, committee_max=3, value_bits=14, tau=64, proofs=False
)
BACKEND = {"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}}


# ---- data, model and the training step (numpy, float64) ---------------------------------
def _partitions() -> list[tuple[np.ndarray, np.ndarray]]:
    digits = load_digits()
    x, y = digits.data / 16.0, digits.target
    order = np.random.default_rng(0).permutation(len(y))
    return [(x[part], y[part]) for part in np.array_split(order, NODES)]


DATA = _partitions()


def _smoothness(x: np.ndarray) -> float:
    augmented = np.hstack([x, np.ones((len(x), 1))])
    return float(np.linalg.eigvalsh(augmented.T @ augmented).max()) / (2 * len(x))


STEP = 1.0 / max(_smoothness(x) for x, _ in DATA)  # η = 1/L ≤ 2/L for every client


def _initial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"weight": rng.normal(0, 0.01, (10, 64)), "bias": np.zeros(10)}


def local_train(model: dict[str, np.ndarray], partition: int) -> tuple[dict[str, Any], float]:
    x, y = DATA[partition]
    weight, bias = model["weight"].copy(), model["bias"].copy()
    onehot = np.eye(10)[y]
    loss = 0.0
    for _ in range(STEPS):
        logits = x @ weight.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        loss = float(-np.log(p[np.arange(len(y)), y]).mean())
        gradient = (p - onehot) / len(y)
        weight -= STEP * gradient.T @ x
        bias -= STEP * gradient.sum(axis=0)
    return {"weight": weight, "bias": bias}, loss


def _as_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in arrays.items()}


def _as_record(model: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.asarray(value)) for name, value in model.items()})


def _flat(model: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([model["weight"].ravel(), model["bias"].ravel()])


def _ckks_bound(average: np.ndarray, total: float) -> float:
    """One he-agg average's per-value error bound (module docstring)."""
    return PARAMS.error_bound(THRESHOLD) * (1 + np.abs(average).max()) / total


# ---- the Flower apps --------------------------------------------------------------------
def make_client_app(mods: list[Any], drop: int | None = None) -> ClientApp:
    """quickstart-style train/evaluate functions; partition ``drop`` fails in train."""
    app = ClientApp(mods=mods)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        if partition == drop:
            raise RuntimeError(f"partition {partition} drops out")
        model, loss = local_train(_as_numpy(msg.content["arrays"]), partition)
        metrics = MetricRecord({"train_loss": loss, "num-examples": len(DATA[partition][1])})
        return Message(RecordDict({"arrays": _as_record(model), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        x, y = DATA[int(context.node_config["partition-id"])]
        model = _as_numpy(msg.content["arrays"])
        accuracy = float(((x @ model["weight"].T + model["bias"]).argmax(axis=1) == y).mean())
        metrics = MetricRecord({"accuracy": accuracy, "num-examples": len(y)})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


class Recording(HeAggFedAvg):
    """Keeps every train reply the ServerApp receives."""

    replies: list[Message]

    def aggregate_train(
        self, server_round: int, replies: Any
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.replies.extend(replies)
        return super().aggregate_train(server_round, replies)


def simulate(
    strategy: Strategy, client_app: ClientApp, rounds: int
) -> tuple[Result, dict[int, dict[str, np.ndarray]]]:
    """Run ``strategy`` for ``rounds`` in Flower's simulation engine; the result and the
    global model after each round (taken by Flower's own ``evaluate_fn`` hook)."""
    models: dict[int, dict[str, np.ndarray]] = {}
    results: list[Result] = []

    def record(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        models[server_round] = _as_numpy(arrays)
        return MetricRecord()

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        results.append(
            strategy.start(grid, _as_record(_initial()), num_rounds=rounds, evaluate_fn=record)
        )

    run_simulation(server, client_app, num_supernodes=NODES, backend_config=BACKEND)
    return results[0], models


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("flower")
    federation = LocalFederation(
        root,
        "flower-test",
        [f"client-{i}" for i in range(NODES)],
        params=PARAMS,
        members=3,
        threshold=THRESHOLD,
        k_min=K_MIN,
        # members that are up share well within it while Ray shares the 2 cores; a
        # committee below t aborts after 10 share timeouts (the last test waits that out)
        share_timeout=5.0,
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLWR_TELEMETRY_ENABLED", "0")  # offline: no usage events,
        env.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")  # no version check
        env.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no FutureWarning
        env.setenv("HE_AGG_PASSPHRASE", federation.passphrase)  # the harness's key files
        # Ray's workers unpickle this module's ClientApp: they must be able to import it
        path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, path)))
        federation.start()
        try:
            for name in federation.clients:
                federation.client_key_file(name)
            yield federation
        finally:
            federation.stop()


def he_agg_mod_for(fed: LocalFederation) -> HeAggMod:
    """The mod with the settings ``run_simulation`` cannot pass in a run config."""
    return HeAggMod(
        {
            SERVER: fed.server.url,
            ROSTER: str(fed.roster_file),
            KEY_DIR: str(fed.root / "clients"),
            SPOOL_DIR: str(fed.root / "spool"),
        }
    )


def he_strategy(fed: LocalFederation, **options: Any) -> Recording:
    # FedAvg computes fraction_train × the nodes connected *before* it waits for
    # min_available_nodes: only min_train_nodes makes round 1 sample every node
    options.setdefault("min_train_nodes", NODES)
    options.setdefault("min_available_nodes", NODES)
    strategy = Recording(fed.server.url, fed.federation, fed.admin.signing, **options)
    strategy.replies = []
    return strategy


# ---- (a) and (d): three rounds against Flower's FedAvg ----------------------------------
def test_three_rounds_equal_flowers_fedavg_within_the_ckks_bound(fed: LocalFederation) -> None:
    strategy = he_strategy(fed)
    he_result, he_models = simulate(strategy, make_client_app([he_agg_mod_for(fed)]), ROUNDS)
    plain = FedAvg(min_train_nodes=NODES, min_available_nodes=NODES)
    plain_result, plain_models = simulate(plain, make_client_app([]), ROUNDS)

    assert [o.state for o in strategy.outcomes.values()] == [RoundState.PUBLISHED] * ROUNDS
    assert all(len(o.uploads) == NODES for o in strategy.outcomes.values())
    total = sum(len(y) for _, y in DATA)
    dimension = _flat(_initial()).size
    allowed = 0.0
    for r in range(1, ROUNDS + 1):
        allowed += np.sqrt(dimension) * _ckks_bound(_flat(plain_models[r]), total)
        gap = _flat(he_models[r]) - _flat(plain_models[r])
        assert np.linalg.norm(gap) <= allowed
        if r == 1:  # same global model in: the per-value bound itself holds
            assert np.abs(gap).max() <= _ckks_bound(_flat(plain_models[1]), total)
    final_gap = np.abs(_flat(he_models[ROUNDS]) - _flat(plain_models[ROUNDS])).max()
    print(f"\nmax |HE − FedAvg| after {ROUNDS} rounds: {final_gap:.3g} (L2 bound {allowed:.3g})")
    assert final_gap > 0  # CKKS noise: it really went through he-agg
    assert final_gap <= allowed
    # Flower's metrics and evaluation keep working
    for r in range(1, ROUNDS + 1):
        he_loss = he_result.train_metrics_clientapp[r]["train_loss"]
        assert he_loss == pytest.approx(plain_result.train_metrics_clientapp[r]["train_loss"])
        assert he_result.evaluate_metrics_clientapp[r]["accuracy"] == pytest.approx(
            plain_result.evaluate_metrics_clientapp[r]["accuracy"]
        )
    assert he_result.evaluate_metrics_clientapp[ROUNDS]["accuracy"] > 0.8

    # (d) no plaintext update crossed the ServerApp: replies hold metrics and receipts only
    assert len(strategy.replies) == ROUNDS * NODES
    for reply in strategy.replies:
        assert not reply.has_error()
        assert not reply.content.array_records
        receipt = reply.content[RECEIPT_RECORD]
        assert len(str(receipt["sha256"])) == 64 and int(receipt["size"]) > 0
    # ... and the strategy holds no key material but the admin's signing key
    private = _private_keys(strategy)
    assert len(private) == 1 and isinstance(private[0], Ed25519PrivateKey)
    assert private[0].public_key() == fed.admin.signing.public_key()


def _private_keys(root: object) -> list[Any]:
    """Every secret reachable from ``root``'s attributes: private keys of any kind and
    anything of he-agg's committee (``keys.*``: shares, member keys, identities)."""
    found: list[Any] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, str | bytes | int | float | type(None) | type):
            continue
        seen.add(id(item))
        name = type(item).__name__
        if type(item).__module__.startswith("keys.") or (
            "Private" in name or "Secret" in name or isinstance(item, X25519PrivateKey)
        ):
            found.append(item)
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            stack.extend(getattr(item, "__dict__", {}).values())
            slots = getattr(type(item), "__slots__", ())
            stack.extend(getattr(item, s) for s in slots if hasattr(item, s))
    return found


# ---- (b) a dropped ClientApp ------------------------------------------------------------
def test_a_dropped_clientapp_leaves_a_round_of_the_others(fed: LocalFederation) -> None:
    strategy = he_strategy(fed)
    _, models = simulate(strategy, make_client_app([he_agg_mod_for(fed)], drop=3), 1)

    outcome = strategy.outcomes[1]
    assert outcome.state == RoundState.PUBLISHED
    assert outcome.uploads == ("client-0", "client-1", "client-2")  # K_min = 3 uploaded
    assert sum(reply.has_error() for reply in strategy.replies) == 1
    trained = [local_train(_initial(), partition)[0] for partition in range(3)]
    weights = [len(DATA[partition][1]) for partition in range(3)]
    expected = sum(w * _flat(m) for w, m in zip(weights, trained, strict=True)) / sum(weights)
    gap = np.abs(_flat(models[1]) - expected).max()
    assert gap <= _ckks_bound(expected, sum(weights))


# ---- the strategy and the mod refuse plaintext ------------------------------------------
def _message(content: RecordDict, message_type: str = "train") -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="m",
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="1",
        created_at=0.0,
        ttl=60.0,
        message_type=message_type,
    )
    return Message(content, metadata=metadata)


def test_the_mod_refuses_to_train_for_a_round_without_he_agg() -> None:
    """A train message naming no he-agg round (a plain FedAvg ServerApp) is refused
    before training, so the model never leaves the node in plaintext."""
    message = _message(RecordDict({"arrays": _as_record(_initial()), "config": ConfigRecord()}))
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    called: list[Message] = []

    def train(msg: Message, ctx: Context) -> Message:
        called.append(msg)
        return msg

    reply = HeAggMod()(message, context, train)
    assert reply.has_error() and "plaintext" in reply.error.reason and not called
    # a round named, but no identity configured: refused before training too
    named = _message(
        RecordDict({"arrays": _as_record(_initial()), "config": ConfigRecord({ROUND: 1})})
    )
    reply = HeAggMod()(named, context, train)
    assert reply.has_error() and "he-agg-roster" in reply.error.reason and not called
    evaluate = _message(RecordDict({"config": ConfigRecord({ROUND: 1})}), "evaluate")
    assert HeAggMod()(evaluate, context, train) is evaluate  # evaluation passes through


def test_the_strategy_ignores_a_reply_that_carries_a_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategy = HeAggFedAvg("http://127.0.0.1:9", "none", Ed25519PrivateKey.generate())
    metrics = MetricRecord({"num-examples": 5, "train_loss": 1.0})
    leaked = _message(RecordDict({"arrays": _as_record(_initial()), "metrics": metrics}))
    with caplog.at_level(logging.ERROR, logger="flwr.he_agg"):
        arrays, aggregated = strategy.aggregate_train(1, [leaked])
    assert arrays is None and aggregated is None
    assert "plaintext" in caplog.text


# ---- (c) a committee below t --------------------------------------------------------------
def test_a_committee_below_t_aborts_the_round_and_keeps_the_model(
    fed: LocalFederation, caplog: pytest.LogCaptureFixture
) -> None:
    # last in this module: the fixture's committee stays below t afterwards
    for process in fed.processes[1:]:  # members 2 and 3 stop: 1 < t = 2 remain
        process.terminate()
        process.wait(timeout=10)
    strategy = he_strategy(fed, model_timeout=120.0)
    with caplog.at_level(logging.WARNING, logger="flwr.he_agg"):
        result, models = simulate(strategy, make_client_app([he_agg_mod_for(fed)]), 1)

    outcome = strategy.outcomes[1]
    assert outcome.state == RoundState.ABORTED and outcome.reason
    assert "endorsed" in outcome.reason  # 1 member endorsed; a quorum is 3
    assert outcome.reason in caplog.text and "stays as it was" in caplog.text
    for name, value in _initial().items():  # the global model did not move
        assert np.array_equal(models[1][name], value)
    assert not result.arrays  # Flower's Result got no new arrays
