"""The finance consortium pilot: banks train a credit-risk model together over he-agg.

The server, the committee (n=3, t=2) and every bank run as separate processes talking
HTTP on loopback, over TLS by default (a throwaway CA in the run's work folder). The
coordinator here only opens rounds and evaluates each published model on held-out loans;
it never sees a bank's rows or update. In the same run it trains the comparisons with the
same seeds: plaintext FedAvg, centralised training, and each bank alone, plus
differentially private FedAvg at a few noise levels.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from clients.harness.local import LocalFederation
from clients.pilot.baselines import held_out, run_baselines
from clients.pilot.report import write_report
from clients.pilot.results import PilotConfig, PilotResult
from clients.pilot.shared import MODELS, STATS_ROUND, load_data, make_model
from clients.simulation.training import evaluate
from he_agg.api.states import RoundState
from he_agg.params import ParameterSet, derive_parameters

__all__ = ["FEDERATION", "pilot_parameters", "run_pilot"]

FEDERATION = "lending-pilot"


def pilot_parameters(banks: int) -> ParameterSet:
    """Weights are n_k / (largest bank) ≤ 1; values up to 2^10 (the statistics round)."""
    value_bits = math.ceil(math.log2(banks * 1024)) + 1
    return derive_parameters(
        "pilot", k_max=banks, committee_max=3, value_bits=value_bits, precision_bits=36
    )


def _bank_processes(
    local: LocalFederation, result: PilotResult, folder: Path
) -> list[subprocess.Popen[bytes]]:
    """One ``clients.pilot.pilot_bank`` process per bank, each told only its own name."""
    data, config = result.data, result.config
    spec = {
        "server": local.server.url,
        "ca_file": None if local.ca_file is None else str(local.ca_file),
        "roster": str(local.roster_file),  # each bank pins the admin's roster
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
        with open(folder / f"{bank}.log", "ab") as log:  # the child keeps its own copy
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "clients.pilot.pilot_bank", str(path), bank],
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
        if status.state == RoundState.PUBLISHED:
            break
        if status.state == RoundState.ABORTED:
            raise RuntimeError(f"round {number} aborted: {status.reason}")
        if time.perf_counter() - opened > timeout:
            raise TimeoutError(f"round {number} did not publish in {timeout:.0f} s")
        time.sleep(0.05)
    model = admin.model(FEDERATION, number)
    return {"model": model, "seconds": time.perf_counter() - opened}


def _federated_he(result: PilotResult, folder: Path, console: Console, tls: bool) -> None:
    """HE-FedAvg: every party its own process, every message over loopback HTTP(S)."""
    banks = result.data.bank_names
    local = LocalFederation(
        folder / "federation",
        FEDERATION,
        banks,
        params=result.params,
        members=3,
        threshold=2,
        k_min=len(banks),
        tls=tls,
    )
    local.start()
    processes = _bank_processes(local, result, folder)
    try:
        total = 1 + result.config.rounds * len(MODELS)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("HE-FedAvg rounds over HTTP", total=total)
            _coordinate(local, result, lambda: bar.advance(task))
        for process in processes:
            process.wait(timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        local.stop()
    timings = folder / "bank-timings.jsonl"
    result.timings = [json.loads(line) for line in timings.read_text().splitlines()]


def _coordinate(local: LocalFederation, result: PilotResult, advance: Callable[[], None]) -> None:
    """Open every round in turn; evaluate each published model on the held-out loans."""
    config = result.config
    stats_round = _run_round(local, STATS_ROUND)
    result.stats = {k: np.asarray(v) for k, v in stats_round["model"].items()}
    result.rounds_seconds.append(
        {"round": STATS_ROUND, "stage": "statistics", "seconds": stats_round["seconds"]}
    )
    advance()
    x_test, y_test, pos_weight = held_out(result)
    evaluation = dataclasses.replace(config.local, pos_weight=pos_weight, task="binary")
    number = STATS_ROUND
    for name in MODELS:
        model = make_model(name, x_test.shape[1], config.seed)
        records = []
        for r in range(1, config.rounds + 1):
            number += 1
            outcome = _run_round(local, number)
            state = {k: torch.as_tensor(v) for k, v in outcome["model"].items()}
            records.append({"round": r, **evaluate(model, state, x_test, y_test, evaluation)})
            result.rounds_seconds.append(
                {"round": number, "stage": name, "seconds": outcome["seconds"]}
            )
            advance()
        result.he[name] = records


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


def run_pilot(
    config: PilotConfig, console: Console | None = None, *, tls: bool = True
) -> PilotResult:
    """The whole pilot; ``tls`` False: plain http on loopback instead of https."""
    console = console or Console()
    torch.set_num_threads(1)  # as in the bank processes: same arithmetic, same results
    started = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    data = load_data(config.data, config.seed)
    result = PilotResult(config, data, pilot_parameters(len(data.bank_names)))
    console.print(
        f"[bold]he-agg finance pilot[/]: {data.source}, {len(data.y)} {data.rows_noun}, "
        f"{len(data.bank_names)} banks, committee 2-of-3, {config.rounds} rounds "
        f"per model, {'over TLS' if tls else 'plain HTTP'}"
    )
    with tempfile.TemporaryDirectory(prefix="he-agg-pilot-") as folder:
        _federated_he(result, Path(folder), console, tls)
    run_baselines(result, console)
    result.seconds = time.perf_counter() - started
    _acceptance(result)
    write_report(result, console)
    return result
