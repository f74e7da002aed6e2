"""Flower's SecAgg+ as a baseline: one aggregation round of plain FedAvg, SecAgg+ and he-agg
on the same model, the same simulated clients and the same Ray actors, in one run.

**Method.** One ``run_simulation`` (Flower's simulation engine, Ray backend, one CPU per
ClientApp actor) with K SuperNodes serves every method in turn; the ServerApp runs them
one after the other. The model is one flat float32 vector of P parameters. The ClientApp
does no training: node k replies with a fixed update w_k (uniform in [−1, 1], seeded by
k) and n_k = 100·(k + 1) examples, so a round times aggregation only. Each method runs a
warm-up round and then ``--repeats`` rounds; a round is timed in the ServerApp from one
round boundary to the next (Flower's ``evaluate_fn`` hook is called before round 1 and
after each round; client-side evaluation is off), so it covers sampling, sending, the
ClientApps (mods included), the replies and the aggregation. The methods:

* **FedAvg**, Flower's Message-API strategy (``flwr.serverapp.strategy.FedAvg``), the
  plain baseline of he-agg (``HeAggFedAvg`` subclasses it);
* **FedAvg (legacy)**, ``flwr.server.strategy.FedAvg`` under ``DefaultWorkflow``, the plain
  baseline of SecAgg+, which in flwr 1.42 exists only in that API;
* **SecAgg+**: ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(3, 2))`` with
  ``secaggplus_mod``. Flower gives no rule per client count; 3 shares, threshold 2 are
  the values of its example app (examples/flower-secure-aggregation), about log2 K
  neighbours as the SecAgg+ paper suggests. Other settings are the workflow's defaults
  (clipping 8, quantization 2^22, modulus 2^32, max_weight 1000 ≥ every n_k). A second
  row makes every client a neighbour (num_shares = K, threshold ⌊K/2⌋ + 1);
* **he-agg**: ``HeAggFedAvg`` + ``he_agg_mod`` against a real aggregator (uvicorn on
  loopback, SQLite and blobs) and a 2-of-3 committee of ``he-agg committee run``
  processes (polling every 0.2 s), started after the other methods and stopped before
  the next set. Two parameter sets: tests/test_flower.py's derivation (no proofs,
  V = 2^14, τ = 64, K_max = K) and the default set (proofs of well-formed uploads, V =
  2^40, K_max = 1000).

One ClientApp serves all of them: a routing mod hands SecAgg+ messages to
``secaggplus_mod``, he-agg train messages to ``he_agg_mod`` and the rest to the train
function, which answers in the legacy (FitRes) or Message-API layout it was asked in.
He-agg's client settings (aggregator URL, roster, key folder) ride in the train config,
since ``run_simulation`` passes no run config.

Bytes are counted on the messages of the last round as they cross the ServerApp's grid,
as Flower's ``message_size_mod`` counts them (array data, keys, values; the gRPC framing
of a deployment is left out), summed over the round's messages (SecAgg+ has four), plus
for he-agg the HTTP body the aggregator received (the upload receipt's size). The
simulation's grid polls for replies every 0.1 s, so each exchange waits in steps of
0.1 s. The error is max |aggregate − Σ n_k·w_k / Σ n_k| over every round, against the
float64 average. Writes flower.json (environment included) and flower.md to ``--out``.

    python benchmarks/bench_flower.py [--params 1000000] [--clients 10] [--repeats 3]
        [--quick] [--no-default-set] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common.recorddict_compat import fitres_to_recorddict
from flwr.proto.node_pb2 import NodeInfo
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from flwr.supercore.run import Run
from rich.console import Console
from rich.progress import Progress, TaskID

from clients.bench.bench import environment
from clients.flower import HeAggFedAvg, HeAggMod
from clients.flower.records import RECEIPT_RECORD, ROUND
from clients.flower.settings import KEY_DIR, PASSPHRASE_ENV, ROSTER, SERVER, SPOOL_DIR
from clients.harness.local import LocalFederation
from clients.harness.signals import exit_on_sigterm
from he_agg.api.states import RoundState
from he_agg.params import DEFAULT, ParameterSet, derive_parameters

__all__ = ["BenchConfig", "main", "run_bench"]

HERE = Path(__file__).resolve().parent
SEED = 20_261_127
TENSOR = "update"  # the model's one tensor
BACKEND: Any = {"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}}
THRESHOLD, MEMBERS = 2, 3  # he-agg's committee
SECAGG_SHARES, SECAGG_THRESHOLD = 3, 2  # Flower's example app
SECAGG_CLIP, SECAGG_QUANT, SECAGG_MAX_WEIGHT = 8.0, 2**22, 1000.0  # the workflow's defaults


@dataclass(frozen=True)
class BenchConfig:
    params: int = 1_000_000
    clients: int = 10
    repeats: int = 3
    out: Path = Path("benchmarks/results")
    default_set: bool = True  # also he-agg's default parameter set (proofs)

    @property
    def rounds(self) -> int:
        return self.repeats + 1  # one warm-up round


# ---- the clients' fixed updates ---------------------------------------------------------
def client_weight(partition: int) -> int:
    return 100 * (partition + 1)


def make_update(partition: int, size: int) -> np.ndarray:
    return np.random.default_rng([SEED, partition]).uniform(-1, 1, size).astype(np.float32)


_UPDATES: dict[tuple[int, int], np.ndarray] = {}  # per actor process: made once per node


def client_update(partition: int, size: int) -> np.ndarray:
    if (partition, size) not in _UPDATES:
        _UPDATES[partition, size] = make_update(partition, size)
    return _UPDATES[partition, size]


def exact_average(clients: int, size: int) -> np.ndarray:
    """Σ n_k·w_k / Σ n_k in float64, what every method should publish."""
    total = np.zeros(size)
    for k in range(clients):
        total += client_weight(k) * make_update(k, size).astype(np.float64)
    return total / sum(client_weight(k) for k in range(clients))


# ---- the ClientApp ----------------------------------------------------------------------
_HE_AGG_MODS: dict[tuple[tuple[str, str], ...], HeAggMod] = {}


def route(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+ messages to ``secaggplus_mod``, he-agg rounds to ``he_agg_mod`` (with the
    settings the train config carries), everything else straight to the train function."""
    records = msg.content.config_records
    if RECORD_KEY_CONFIGS in records:
        reply: Message = secaggplus_mod(msg, context, call_next)
        return reply
    for record in records.values():
        if ROUND in record:
            settings = tuple(
                (key, str(record[key])) for key in (SERVER, ROSTER, KEY_DIR, SPOOL_DIR)
            )
            if settings not in _HE_AGG_MODS:
                logging.getLogger("flwr.he_agg").setLevel(logging.WARNING)  # one line per upload
                _HE_AGG_MODS[settings] = HeAggMod(dict(settings))
            return _HE_AGG_MODS[settings](msg, context, call_next)
    return call_next(msg, context)


def make_client_app(size: int) -> ClientApp:
    app = ClientApp(mods=[route])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        """The fixed update, in the layout the ServerApp asked in: FitRes for the legacy
        workflows (SecAgg+ included), an ArrayRecord and num-examples otherwise."""
        partition = int(context.node_config["partition-id"])
        update, weight = client_update(partition, size), client_weight(partition)
        if "fitins.config" in msg.content.config_records:
            fitres = FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters([update]), weight, {})
            return Message(fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)
        arrays = ArrayRecord({TENSOR: Array(update)})
        metrics = MetricRecord({"num-examples": weight})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


# ---- the ServerApp side: a grid that counts bytes and waits, a clock ------------------
def _value_bytes(value: Any) -> int:
    if isinstance(value, list):
        return sum(_value_bytes(item) for item in value)
    if isinstance(value, str | bytes):
        return len(value)
    return 1 if isinstance(value, bool) else 8  # numbers travel as 64 bits


def payload_bytes(message: Message) -> int:
    """A message's records as Flower's ``message_size_mod`` counts them
    (``Record.count_bytes``: array data, keys, values), which leaves out the framing. Its
    ConfigRecord count fails on an empty list (SecAgg+ sends some), hence our own. An
    he-agg reply adds the HTTP body the aggregator received (its receipt's size)."""
    if not message.has_content():
        return 0
    total = 0
    for record in message.content.values():
        if isinstance(record, ArrayRecord):
            total += record.count_bytes()
        else:
            total += sum(len(key) + _value_bytes(value) for key, value in record.items())
    receipt = message.content.config_records.get(RECEIPT_RECORD)
    if receipt is not None:
        total += int(str(receipt["size"]))
    return total


@dataclass
class Traffic:
    """One round's messages: bytes the nodes sent and received, seconds spent waiting for
    their replies (the ClientApps' share of the round, he-agg's uploads included)."""

    sent: int = 0
    received: int = 0
    waiting: float = 0.0


class RecordingGrid(Grid):
    """Flower's grid, counting the bytes of every message sent and every reply."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.traffic = Traffic()

    def take(self) -> Traffic:
        traffic, self.traffic = self.traffic, Traffic()
        return traffic

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        requests = list(messages)
        self.traffic.received += sum(payload_bytes(m) for m in requests)
        start = time.perf_counter()
        replies = list(self.inner.send_and_receive(requests, timeout=timeout))
        self.traffic.waiting += time.perf_counter() - start
        self.traffic.sent += sum(payload_bytes(m) for m in replies)
        return replies

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)


@dataclass
class Clock:
    """``evaluate_fn`` of both strategy APIs: at every round boundary a timestamp, the
    global model and the traffic of the round that just ended."""

    grid: RecordingGrid
    advance: Callable[[], None]
    stamps: list[float] = field(default_factory=list)
    models: list[Any] = field(default_factory=list)  # ArrayRecord or list of arrays
    traffic: list[Traffic] = field(default_factory=list)
    outcomes: list[RoundState] = field(default_factory=list)  # he-agg only

    def mark(self, model: Any) -> None:
        self.stamps.append(time.perf_counter())
        self.models.append(model)
        self.traffic.append(self.grid.take())
        if len(self.stamps) > 1:
            self.advance()

    def message_api(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        self.mark(arrays)
        return None

    def legacy(self, server_round: int, arrays: list[np.ndarray], config: Any) -> None:
        self.mark(arrays)


# ---- the methods --------------------------------------------------------------------------
def _initial(size: int) -> ArrayRecord:
    return ArrayRecord({TENSOR: Array(np.zeros(size, np.float32))})


def run_fedavg(grid: Grid, context: Context, config: BenchConfig, clock: Clock) -> None:
    k = config.clients
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=k, min_available_nodes=k)
    strategy.start(grid, _initial(config.params), config.rounds, evaluate_fn=clock.message_api)


def run_legacy(
    grid: Grid, context: Context, config: BenchConfig, clock: Clock, fit_workflow: Any = None
) -> None:
    """Flower's legacy FedAvg under ``DefaultWorkflow``, with ``fit_workflow`` (SecAgg+)."""
    k = config.clients
    strategy = LegacyFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=k,
        min_available_clients=k,
        initial_parameters=ndarrays_to_parameters([np.zeros(config.params, np.float32)]),
        evaluate_fn=clock.legacy,
    )
    fresh = Context(context.run_id, context.node_id, context.node_config, RecordDict(), {})
    legacy = LegacyContext(fresh, ServerConfig(num_rounds=config.rounds), strategy)
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)


def run_secaggplus(
    grid: Grid, context: Context, config: BenchConfig, clock: Clock, shares: int, threshold: int
) -> None:
    workflow = SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=threshold)
    run_legacy(grid, context, config, clock, workflow)


def run_he_agg(grid: Grid, federation: LocalFederation, config: BenchConfig, clock: Clock) -> None:
    k = config.clients
    strategy = HeAggFedAvg(
        federation.server.url,
        federation.federation,
        federation.admin.signing,
        poll_interval=0.05,
        fraction_evaluate=0.0,
        min_train_nodes=k,
        min_available_nodes=k,
    )
    settings = ConfigRecord(
        {
            SERVER: federation.server.url,
            ROSTER: str(federation.roster_file),
            KEY_DIR: str(federation.root / "clients"),
            SPOOL_DIR: str(federation.root / "spool"),
        }
    )
    strategy.start(
        grid,
        _initial(config.params),
        config.rounds,
        train_config=settings,
        evaluate_fn=clock.message_api,
    )
    clock.outcomes = [outcome.state for outcome in strategy.outcomes.values()]


# ---- which methods, in which order ------------------------------------------------------
Runner = Callable[[Grid, Context, Clock], None]

HBC_SERVER = (
    "an honest-but-curious server (it follows the protocol), and up to num_shares − "
    "threshold dropouts among each node's num_shares share holders (itself included). "
    "A server that tells a node's neighbours different stories about who dropped out "
    "(nothing checks they agree), or that colludes with threshold of them, unmasks that "
    "node; a client's input is not checked (clipping only)"
)
HE_AGG_TRUST = (
    "an aggregator that lies (serves a wrong key or config, replays, re-asks a round "
    "with other uploads, tampers with the aggregate: clients and members check it), "
    "any t − 1 colluding committee members, and a Flower ServerApp that sees only the "
    "average; every upload is signed by an enrolled client, the committee decrypts once "
    "per round and only for at least K_min of them"
)
PROOFS_TRUST = {
    True: "; malicious clients too: every upload proves it is well formed (SECURITY.md)",
    False: "; without proofs, only if every client is honest: a crafted ciphertext can "
    "extract the key (SECURITY.md; benchmarks and trusted clients only)",
}


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    baseline: str  # the plain row its ratio is taken against (the same strategy API)
    defends: str
    settings: dict[str, Any]
    run: Runner
    params: ParameterSet | None = None  # he-agg's parameter set


def test_set(clients: int) -> ParameterSet:
    """tests/test_flower.py's derivation at K_max = K: no proofs, τ = 64, V = 2^14 (more
    if K·max n_k needs it, since each client keeps |n_k·w| ≤ V/K_max)."""
    need = math.ceil(math.log2(clients * client_weight(clients - 1)))
    return derive_parameters(
        "bench-flower",
        k_max=clients,
        committee_max=MEMBERS,
        value_bits=max(14, need),
        tau=64,
        proofs=False,
    )


@contextmanager
def running(federation: LocalFederation) -> Iterator[LocalFederation]:
    """The aggregator and committee up (DKG done) and every client's key file written."""
    federation.start()
    try:
        for name in federation.clients:
            federation.client_key_file(name)
        yield federation
    finally:
        federation.stop()


def he_agg_method(key: str, federation: LocalFederation, config: BenchConfig) -> Method:
    params = federation.params
    assert params is not None

    def run(grid: Grid, context: Context, clock: Clock) -> None:
        with running(federation):
            run_he_agg(grid, federation, config, clock)

    proofs = "proofs" if params.proofs else "no proofs"
    return Method(
        key,
        f"he-agg, set `{params.name}` (N={params.poly_degree}, {proofs})",
        "fedavg",
        HE_AGG_TRUST + PROOFS_TRUST[params.proofs],
        {
            "parameter_set": params.describe(),
            "committee": f"{THRESHOLD} of {MEMBERS}",
            "k_min": config.clients,
            "strategy_poll_interval_s": 0.05,
            "member_poll_interval_s": 0.2,
        },
        run,
        params,
    )


def plain_methods(config: BenchConfig) -> list[Method]:
    exposed = "nothing: the server sees every update"
    return [
        Method("fedavg", "FedAvg (Message API)", "fedavg", exposed, {},
               lambda grid, context, clock: run_fedavg(grid, context, config, clock)),
        Method("fedavg_legacy", "FedAvg (legacy DefaultWorkflow)", "fedavg_legacy", exposed, {},
               lambda grid, context, clock: run_legacy(grid, context, config, clock)),
    ]  # fmt: skip


def secagg_methods(config: BenchConfig) -> list[Method]:
    """Flower's example setting and, with more than 3 clients, every client a neighbour
    (num_shares = K, a majority threshold)."""
    settings = [(SECAGG_SHARES, SECAGG_THRESHOLD)]
    if config.clients > SECAGG_SHARES:
        settings.append((config.clients, config.clients // 2 + 1))
    defaults = {"clipping_range": SECAGG_CLIP, "quantization_range": SECAGG_QUANT,
                "modulus_range": 2**32, "max_weight": SECAGG_MAX_WEIGHT}  # fmt: skip
    found = []
    for shares, threshold in settings:
        every = shares == config.clients and len(settings) > 1
        found.append(
            Method(
                "secaggplus_all" if every else "secaggplus",
                f"SecAgg+{', every client a neighbour' if every else ''} "
                f"({shares} shares, threshold {threshold})",
                "fedavg_legacy",
                HBC_SERVER,
                {"num_shares": shares, "reconstruction_threshold": threshold, **defaults},
                partial(_secagg_runner, config, shares, threshold),
            )
        )
    return found


def _secagg_runner(
    config: BenchConfig, shares: int, threshold: int, grid: Grid, context: Context, clock: Clock
) -> None:
    run_secaggplus(grid, context, config, clock, shares, threshold)


def he_agg_methods(config: BenchConfig, root: Path) -> list[Method]:
    """tests/test_flower.py's set and, unless left out, the default set: each with its own
    aggregator and committee, started when its turn comes."""
    sets = [("he_agg", test_set(config.clients))]
    if config.default_set:
        sets.append(("he_agg_default", DEFAULT))
    found = []
    for key, params in sets:
        federation = LocalFederation(
            root / key,
            key.replace("_", "-"),
            [f"client-{i}" for i in range(config.clients)],
            params=params,
            members=MEMBERS,
            threshold=THRESHOLD,
            k_min=config.clients,
        )
        found.append(he_agg_method(key, federation, config))
    return found


def methods(config: BenchConfig, root: Path) -> list[Method]:
    return [*plain_methods(config), *secagg_methods(config), *he_agg_methods(config, root)]


# ---- running them -------------------------------------------------------------------------
def make_server_app(
    todo: list[Method], clocks: dict[str, Clock], advance: Callable[[str], None]
) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        recording = RecordingGrid(grid)
        for method in todo:
            clock = Clock(recording, partial(advance, method.key))
            method.run(recording, context, clock)
            clocks[method.key] = clock

    return app


@contextmanager
def simulation_environment(passphrase: str) -> Iterator[None]:
    """Offline Flower, and what Ray's workers need: this module importable by name, the
    passphrase that opens the clients' key files."""
    saved = dict(os.environ)
    os.environ |= {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        PASSPHRASE_ENV: passphrase,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    logging.getLogger("flwr").setLevel(logging.WARNING)  # the progress bar says where it is
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_bench(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    clocks: dict[str, Clock] = {}
    load = [os.getloadavg()[0]]  # the machine may be shared: say how busy it was
    with tempfile.TemporaryDirectory(prefix="he-agg-flower-") as folder:
        todo = methods(config, Path(folder))
        passphrase = LocalFederation(Path(folder), "x", []).passphrase
        with (
            simulation_environment(passphrase),
            Progress(console=Console(stderr=True), disable=not progress) as bar,
        ):
            tasks: dict[str, TaskID] = {
                m.key: bar.add_task(m.label, total=config.rounds) for m in todo
            }
            server = make_server_app(todo, clocks, lambda key: bar.advance(tasks[key]))
            run_simulation(server, make_client_app(config.params), config.clients, "ray", BACKEND)
    load.append(os.getloadavg()[0])
    missing = [m.key for m in todo if m.key not in clocks]
    if missing:
        raise RuntimeError(f"no measurement for {missing}: the ServerApp failed (log above)")
    return report(config, todo, clocks, load)


# ---- what the runs measured ---------------------------------------------------------------
def _flat(model: Any) -> np.ndarray:
    arrays = model.values() if isinstance(model, ArrayRecord) else model
    return np.concatenate(
        [np.asarray(a.numpy() if isinstance(a, Array) else a).ravel() for a in arrays]
    ).astype(np.float64)


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def error_bound(method: Method, config: BenchConfig, average: np.ndarray) -> float | None:
    """The largest |aggregate − average| each method's arithmetic allows (plain: none).

    SecAgg+: client k sends round(d_k·w_k) on a grid of step 2c/Q (stochastic rounding,
    error below one step) with d_k = round(Q·n_k/W)/Q; the server divides the sum by
    Σ d_k. Below one step per client, plus d_k's rounding (≤ 1/2Q, moving the average by
    at most 2·max|w| per unit of weight): K·(2c + max|w|)/(Q·Σ d_k).
    he-agg: the parameter set's 7σ bound on a decoded value of Σ n_k·w_k, over Σ n_k,
    times 1 + max|w| for the error on Σ n_k (as tests/test_flower.py), plus one float32
    ulp: the published model comes back in the clients' dtype."""
    weights = [client_weight(k) for k in range(config.clients)]
    largest = float(np.abs(average).max()) if average.size else 0.0
    if method.key.startswith("secaggplus"):
        scaled = sum(weights) / SECAGG_MAX_WEIGHT
        return config.clients * (2 * SECAGG_CLIP + 1.0) / (SECAGG_QUANT * scaled)
    if method.params is not None:
        ckks = method.params.error_bound(THRESHOLD) * (1 + largest) / sum(weights)
        return ckks + float(np.finfo(np.float32).eps) * (largest + ckks)
    return None


def summarize(
    method: Method, clock: Clock, config: BenchConfig, average: np.ndarray
) -> dict[str, Any]:
    rounds = np.diff(clock.stamps).tolist()
    if len(rounds) != config.rounds:
        raise RuntimeError(f"{method.key}: {len(rounds)} rounds ran, not {config.rounds}")
    last = clock.traffic[-1]
    per_param = config.clients * config.params
    row: dict[str, Any] = {
        "method": method.key,
        "label": method.label,
        "settings": method.settings,
        "defends_against": method.defends,
        "warmup_seconds": rounds[0],
        "seconds": _stats(rounds[1:]),
        "waiting_for_replies_seconds": _stats([t.waiting for t in clock.traffic[2:]]),
        "upload_bytes_per_param": last.sent / per_param,
        "download_bytes_per_param": last.received / per_param,
        "max_abs_error": max(float(np.abs(_flat(m) - average).max()) for m in clock.models[1:]),
        "error_bound": error_bound(method, config, average),
        "plain_baseline": method.baseline,
    }
    if method.params is not None:
        row["rounds_published"] = sum(s == RoundState.PUBLISHED for s in clock.outcomes)
    return row


def report(
    config: BenchConfig, todo: list[Method], clocks: dict[str, Clock], load: list[float]
) -> dict[str, Any]:
    average = exact_average(config.clients, config.params)
    rows = {m.key: summarize(m, clocks[m.key], config, average) for m in todo}
    for row in rows.values():
        median = row["seconds"]["median"]
        row["ratio_to_plain"] = median / rows[row["plain_baseline"]]["seconds"]["median"]
        row["ratio_to_fedavg"] = median / rows["fedavg"]["seconds"]["median"]
    import flwr
    import ray

    result = {
        "schema": "he-agg-bench-flower/1",
        "environment": environment()
        | {"flwr": flwr.__version__, "ray": ray.__version__, "load_average_1min": load},
        "config": {
            "parameters": config.params,
            "clients": config.clients,
            "repeats": config.repeats,
            "warmup_rounds": 1,
            "weights": [client_weight(k) for k in range(config.clients)],
            "updates": "float32, uniform in [-1, 1], seeded per client",
            "backend": BACKEND,
        },
        "rows": list(rows.values()),
    }
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "flower.json").write_text(json.dumps(result, indent=2) + "\n")
    (config.out / "flower.md").write_text(markdown(result) + "\n")
    return result


def _seconds(stats: dict[str, float]) -> str:
    return f"{stats['median']:.3f} ({stats['min']:.3f}–{stats['max']:.3f})"


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| Method | Round, s | of which waiting for replies, s | ÷ plain (same API) "
        "| ÷ FedAvg | Upload B/param/client | Download B/param/client | Max abs error "
        "| Error bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        bound = "–" if row["error_bound"] is None else f"{row['error_bound']:.2g}"
        lines.append(
            f"| {row['label']} | {_seconds(row['seconds'])} "
            f"| {_seconds(row['waiting_for_replies_seconds'])} | {row['ratio_to_plain']:.2f}× "
            f"| {row['ratio_to_fedavg']:.2f}× | {row['upload_bytes_per_param']:.2f} "
            f"| {row['download_bytes_per_param']:.2f} | {row['max_abs_error']:.2g} | {bound} |"
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    env, cfg = result["environment"], result["config"]
    lines = [
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores), python "
        f"{env['python']}, flwr {env['flwr']}, ray {env['ray']}, numpy {env['numpy']}; "
        f"1-minute load average {env['load_average_1min'][0]:.1f} before, "
        f"{env['load_average_1min'][1]:.1f} after. "
        f"{cfg['parameters']:,} float32 parameters, {cfg['clients']} simulated clients "
        f"(n_k = {cfg['weights'][0]}…{cfg['weights'][-1]}); median (min–max) of "
        f"{cfg['repeats']} rounds after a warm-up round, every method in the same run.",
        "",
        *table(result),
        "",
        "**Method.** " + METHOD,
        "",
        "**What each defends against.**",
        "",
    ]
    groups: dict[str, list[str]] = {}
    for row in result["rows"]:
        groups.setdefault(row["defends_against"], []).append(row["label"])
    lines += [f"- {', '.join(labels)}: {defends}." for defends, labels in groups.items()]
    return "\n".join(lines)


METHOD = (
    "One `run_simulation` (Flower's simulation engine, Ray, one CPU per ClientApp actor) "
    "runs every method in turn on the same simulated clients. The ClientApp does not "
    "train: node k replies with a fixed float32 update (uniform in [−1, 1], seeded by k) "
    "and n_k = 100·(k+1) examples, so a round is aggregation only. A round is timed in "
    "the ServerApp between consecutive calls of Flower's `evaluate_fn` hook (client "
    "evaluation off): sampling, messages, mods, replies and aggregation, after one "
    "warm-up round. Of that, the time the ServerApp waits on replies is the ClientApps' "
    "part (SecAgg+ masking, he-agg encrypting and uploading); the rest is the server's "
    "(SecAgg+ unmasking, he-agg closing the round and the committee decrypting). "
    "The simulation's grid polls for replies every 0.1 s, so each "
    "exchange rounds up to a multiple of 0.1 s; SecAgg+ has four exchanges per round, the "
    "others one. SecAgg+ (`SecAggPlusWorkflow` under `DefaultWorkflow`, `secaggplus_mod`; "
    "flwr 1.42 offers it only in the legacy API) uses Flower's example setting, 3 shares "
    "and threshold 2, and its defaults (clipping 8, quantisation 2^22, modulus 2^32, "
    "max_weight 1000); its ratio is to legacy FedAvg under the same workflow, he-agg's to "
    "the Message-API FedAvg its strategy extends. he-agg is `HeAggFedAvg` + `he_agg_mod` "
    "against an aggregator under uvicorn on loopback and a 2-of-3 committee of `he-agg "
    "committee run` processes (polling every 0.2 s), started for its rows only. Bytes are "
    "those of the last round, counted as Flower's `message_size_mod` does (array data, "
    "keys and values; gRPC framing left out), summed over the round's messages, plus for "
    "he-agg the HTTP body of the upload the aggregator received. The error is the largest "
    "|aggregate − Σ n_k·w_k / Σ n_k| over all rounds against float64; the bound is each "
    "method's arithmetic (SecAgg+: one quantisation step per client and the weights' "
    "rounding; he-agg: the set's 7σ bound over Σ n_k, plus a float32 ulp)."
)


# ---- command line -----------------------------------------------------------------------
def parse(argv: list[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2,000 parameters, 3 clients, 1 repeat, without the default set",
    )
    parser.add_argument("--no-default-set", action="store_true", help="skip he-agg's default set")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.params, args.clients, args.repeats = 2_000, 3, 1
        args.no_default_set = True  # its DKG and proofs would take most of a minute
    if args.clients < 3:
        raise SystemExit("SecAgg+ needs at least 3 clients")
    return BenchConfig(args.params, args.clients, args.repeats, args.out, not args.no_default_set)


def main(argv: list[str] | None = None) -> None:
    exit_on_sigterm()  # its servers and members stop with it
    config = parse(argv)
    started = time.perf_counter()
    result = run_bench(config)
    print("\n".join(table(result)))
    print(f"\n{config.out / 'flower.json'}, flower.md ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    # Ray's workers unpickle the ClientApp's functions by module name: run this file as
    # the module ``bench_flower`` (its folder is on their PYTHONPATH), not as __main__
    sys.path.insert(0, str(HERE))
    importlib.import_module("bench_flower").main()
