"""The finance consortium pilot: banks train a credit-risk model together over he-agg.

The server, the committee (n=3, t=2) and every bank run as separate processes talking
HTTP on loopback. The coordinator here only opens rounds and evaluates each published
model on held-out loans; it never sees a bank's rows or update. In the same run it trains
the comparisons with the same seeds: plaintext FedAvg, centralised training, and each
bank alone, plus differentially private FedAvg at a few noise levels.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from clients.dp import DPConfig
from clients.local import LocalFederation
from clients.pilot_bank import STATS_ROUND, load_data, make_model, standardise
from clients.pilot_data import PilotData
from clients.simulation import FederatedLearning, History
from clients.training import LocalConfig, evaluate, local_seed, train_local
from he_agg.params import ParameterSet, derive_parameters

__all__ = ["PilotConfig", "PilotResult", "run_pilot"]

FEDERATION = "lending-pilot"
MODELS = ("logistic", "mlp")


@dataclass(frozen=True)
class PilotConfig:
    out: Path = Path("pilot-report")
    rounds: int = 8
    seed: int = 0
    data: dict[str, Any] = field(default_factory=lambda: {"kind": "lending_club"})
    local: LocalConfig = field(
        default_factory=lambda: LocalConfig(
            epochs=1, batch_size=64, learning_rate=0.01, optimizer="adam"
        )
    )
    dp_noise: tuple[float, ...] = (0.5, 1.0, 2.0)
    dp_clip: float = 1.0


@dataclass
class PilotResult:
    config: PilotConfig
    data: PilotData
    params: ParameterSet
    he: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    plain: dict[str, History] = field(default_factory=dict)
    central: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    alone: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    dp: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    timings: list[dict[str, Any]] = field(default_factory=list)
    rounds_seconds: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)


def pilot_parameters(banks: int) -> ParameterSet:
    """Weights are n_k / (largest bank) ≤ 1; values up to 2^10 (the statistics round)."""
    value_bits = math.ceil(math.log2(banks * 1024)) + 1
    return derive_parameters(
        "pilot", k_max=banks, committee_max=3, value_bits=value_bits, precision_bits=36
    )


def _bank_processes(local: LocalFederation, result: PilotResult, folder: Path) -> list[Any]:
    data, config = result.data, result.config
    spec = {
        "server": local.server.url,
        "federation": FEDERATION,
        "seed": config.seed,
        "data": config.data,
        "weight_unit": max(len(data.bank_rows(b)) for b in data.bank_names),
        "local": {k: v for k, v in vars(config.local).items() if k not in ("pos_weight", "task")},
        "models": [{"name": m, "rounds": config.rounds} for m in MODELS],
        "keys": {b: str(local.client_key_file(b)) for b in data.bank_names},
        "timings": str(folder / "bank-timings.jsonl"),
    }
    path = folder / "bank-config.json"
    path.write_text(json.dumps(spec, indent=2))
    env = {**os.environ, "HE_AGG_PASSPHRASE": local.passphrase}
    processes = []
    for bank in data.bank_names:
        log = open(folder / f"{bank}.log", "ab")  # noqa: SIM115 - lives with the process
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "clients.pilot_bank", str(path), bank],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return processes


def _run_round(local: LocalFederation, number: int, timeout: float = 300.0) -> dict[str, Any]:
    admin = local.admin_api()
    opened = time.perf_counter()
    admin.open_round(FEDERATION, deadline_seconds=timeout)
    while True:
        status = admin.round(FEDERATION, number)
        if status["state"] == "published":
            break
        if status["state"] == "aborted":
            raise RuntimeError(f"round {number} aborted: {status['reason']}")
        if time.perf_counter() - opened > timeout:
            raise TimeoutError(f"round {number} did not publish in {timeout:.0f} s")
        time.sleep(0.05)
    model = admin.model(FEDERATION, number)
    return {"model": model, "seconds": time.perf_counter() - opened}


def _federated_he(result: PilotResult, folder: Path, console: Console) -> None:
    """HE-FedAvg: every party its own process, every message over loopback HTTP."""
    data, config = result.data, result.config
    local = LocalFederation(
        folder / "federation",
        FEDERATION,
        data.bank_names,
        params=result.params,
        members=3,
        threshold=2,
        k_min=len(data.bank_names),
    )
    local.start()
    processes = _bank_processes(local, result, folder)
    try:
        total = 1 + config.rounds * len(MODELS)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("HE-FedAvg rounds over HTTP", total=total)
            stats_round = _run_round(local, STATS_ROUND)
            result.stats = {k: np.asarray(v) for k, v in stats_round["model"].items()}
            result.rounds_seconds.append(
                {"round": STATS_ROUND, "stage": "statistics", "seconds": stats_round["seconds"]}
            )
            bar.advance(task)
            x_test, y_test, pos_weight = _test_set(result)
            evaluation = LocalConfig(
                **{**vars(config.local), "pos_weight": pos_weight, "task": "binary"}
            )
            number = STATS_ROUND
            for name in MODELS:
                model = make_model(name, x_test.shape[1], config.seed)
                records = []
                for r in range(1, config.rounds + 1):
                    number += 1
                    outcome = _run_round(local, number)
                    state = {k: torch.as_tensor(v) for k, v in outcome["model"].items()}
                    metrics = evaluate(model, state, x_test, y_test, evaluation)
                    records.append({"round": r, **metrics})
                    result.rounds_seconds.append(
                        {"round": number, "stage": name, "seconds": outcome["seconds"]}
                    )
                    bar.advance(task)
                result.he[name] = records
        for process in processes:
            process.wait(timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        local.stop()
    timings = folder / "bank-timings.jsonl"
    result.timings = [json.loads(line) for line in timings.read_text().splitlines()]


def _test_set(result: PilotResult) -> tuple[torch.Tensor, torch.Tensor, float]:
    data = result.data
    x, pos_weight = standardise(data.x[data.test], result.stats)
    return x, torch.as_tensor(data.y[data.test]), pos_weight


def _train_rows(result: PilotResult) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """The banks' rows, standardised like the banks do it, and each bank's positions."""
    data = result.data
    rows = np.concatenate([data.bank_rows(b) for b in data.bank_names])
    x, _ = standardise(data.x[rows], result.stats)
    positions, start = [], 0
    for bank in data.bank_names:
        count = len(data.bank_rows(bank))
        positions.append(np.arange(start, start + count))
        start += count
    return x, torch.as_tensor(data.y[rows]), positions


def _baselines(result: PilotResult, console: Console) -> None:
    config = result.config
    x, y, positions = _train_rows(result)
    x_test, y_test, pos_weight = _test_set(result)
    banks = len(positions)
    local = LocalConfig(**{**vars(config.local), "pos_weight": pos_weight, "task": "binary"})

    def federated(name: str, **options: Any) -> History:
        model = make_model(name, x.shape[1], config.seed)
        fl = FederatedLearning(
            model,
            num_rounds=config.rounds,
            clients_per_round=banks,
            local_epochs=local.epochs,
            batch_size=local.batch_size,
            learning_rate=local.learning_rate,
            optimizer=local.optimizer,
            task="binary",
            pos_weight=pos_weight,
            seed=config.seed,
            show_progress=False,
            **options,
        )
        fl.load_data(
            (x, y), num_clients=banks, partition=lambda *_: positions, test_data=(x_test, y_test)
        )
        return fl.train()

    def alone(name: str, rows: np.ndarray, index: int) -> list[dict[str, Any]]:
        model = make_model(name, x.shape[1], config.seed)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        records = []
        for r in range(1, config.rounds + 1):
            state, _ = train_local(
                model, state, x[rows], y[rows], local, local_seed(config.seed, r, index)
            )
            records.append({"round": r, **evaluate(model, state, x_test, y_test, local)})
        return records

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("baselines (same seeds)", total=len(MODELS) * (3 + banks))
        for name in MODELS:
            result.plain[name] = federated(name, secure=False)
            bar.advance(task)
            result.central[name] = alone(name, np.arange(len(x)), 0)
            bar.advance(task)
            result.alone[name] = {}
            for index, bank in enumerate(result.data.bank_names):
                result.alone[name][bank] = alone(name, positions[index], index)
                bar.advance(task)
            result.dp[name] = []
            for sigma in config.dp_noise:
                history = federated(name, dp=DPConfig(config.dp_clip, sigma))
                final = history.rounds[-1]
                result.dp[name].append(
                    (sigma, float(final.epsilon or math.inf), float(final.metrics["auc"]))
                )
            bar.advance(task)


def _acceptance(result: PilotResult) -> None:
    for name in MODELS:
        he_auc = result.he[name][-1]["auc"]
        plain_auc = result.plain[name].rounds[-1].metrics["auc"]
        alone_aucs = [records[-1]["auc"] for records in result.alone[name].values()]
        result.checks[f"{name}: HE and plaintext FedAvg final AUC agree to 1e-4"] = (
            abs(he_auc - plain_auc) <= 1e-4
        )
        result.checks[f"{name}: HE-FedAvg beats the median bank alone"] = he_auc > float(
            np.median(alone_aucs)
        )
    result.checks["whole run within 5 minutes"] = result.seconds <= 300


def run_pilot(config: PilotConfig, console: Console | None = None) -> PilotResult:
    from clients.report import write_report

    console = console or Console()
    torch.set_num_threads(1)  # as in the bank processes: same arithmetic, same results
    started = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    data = load_data(config.data, config.seed)
    result = PilotResult(config, data, pilot_parameters(len(data.bank_names)))
    console.print(
        f"[bold]he-agg finance pilot[/]: {data.source}, {len(data.y)} loans, "
        f"{len(data.bank_names)} banks, committee 2-of-3, {config.rounds} rounds "
        f"per model"
    )
    import tempfile

    with tempfile.TemporaryDirectory(prefix="he-agg-pilot-") as folder:
        _federated_he(result, Path(folder), console)
    _baselines(result, console)
    result.seconds = time.perf_counter() - started
    _acceptance(result)
    write_report(result, console)
    return result
