"""One bank of the finance pilot, in its own process: it reads only its own rows.

    python -m clients.pilot_bank CONFIG.json BANK

For each scheduled round it waits for the round to open, trains locally from the last
published model, encrypts under the collective key, uploads, and waits for the next
model. Timings per round go to a JSON-lines file for the pilot's overhead table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clients.participant import Participant
from clients.pilot_data import PilotData, load_csv, load_lending_club
from clients.training import LocalConfig, local_seed, logistic_regression, mlp, train_local
from clients.upload import prepare_upload
from he_agg.errors import ServiceError
from keys.identity import load_identity

__all__ = ["load_data", "make_model", "run_bank", "standardise"]

STATS_ROUND = 1


def load_data(spec: dict[str, Any], seed: int) -> PilotData:
    if spec["kind"] == "csv":
        return load_csv(Path(spec["path"]), spec["target"], spec["bank_column"], seed)
    return load_lending_club(seed)


def make_model(name: str, features: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return logistic_regression(features) if name == "logistic" else mlp(features)


def standardise(x: np.ndarray, stats: dict[str, Any]) -> tuple[torch.Tensor, float]:
    """Features scaled by the federated mean and deviation; the positive-class weight."""
    mean = np.asarray(stats["mean"], dtype=np.float64)
    second = np.asarray(stats["sq"], dtype=np.float64)
    deviation = np.sqrt(np.maximum(second - mean**2, 1e-12))
    positive = float(np.asarray(stats["pos"]).reshape(-1)[0])
    scaled = torch.as_tensor((x - mean) / deviation, dtype=torch.float32)
    return scaled, (1.0 - positive) / max(positive, 1e-6)


def _wait_open(participant: Participant, number: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if participant.round_status(number)["state"] == "open":
                return
        except ServiceError as exc:
            if exc.status != 404:
                raise
        time.sleep(0.05)
    raise TimeoutError(f"round {number} never opened")


def run_bank(config: dict[str, Any], bank: str) -> None:
    torch.set_num_threads(1)
    seed = int(config["seed"])
    data = load_data(config["data"], seed)
    rows = data.bank_rows(bank)
    x_raw, y = data.x[rows], torch.as_tensor(data.y[rows])
    weight = len(rows) / float(config["weight_unit"])
    index = data.bank_names.index(bank)
    identity = load_identity(Path(config["keys"][bank]), os.environ["HE_AGG_PASSPHRASE"])
    participant = Participant(
        config["server"], config["federation"], bank, identity.signing, show_progress=False
    )
    public = participant.fetch_public_context()
    log = open(config["timings"], "a")  # noqa: SIM115 - appended to for the whole run

    def upload(update: dict[str, Any], number: int, label: str) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        body, manifest = prepare_upload(
            update, weight, public, federation=config["federation"], round=number, client=bank
        )
        encrypted = time.perf_counter()
        path = f"/v1/federations/{config['federation']}/rounds/{number}/updates/{bank}"
        participant.http.request("PUT", path, content=body, manifest=manifest.to_header())
        sent = time.perf_counter()
        model = participant.wait_for_model(number, poll=0.05)
        entry = {
            "bank": bank,
            "round": number,
            "stage": label,
            "bytes": len(body),
            "parameters": manifest.size,
            "encrypt_s": encrypted - start,
            "upload_s": sent - encrypted,
            "wait_model_s": time.perf_counter() - sent,
        }
        log.write(json.dumps(entry) + "\n")
        log.flush()
        return model

    _wait_open(participant, STATS_ROUND)
    x64 = x_raw.astype(np.float64)
    stats = upload(
        {
            "mean": x64.mean(axis=0),
            "sq": (x64**2).mean(axis=0),
            "pos": np.array([float(y.float().mean())]),
        },
        STATS_ROUND,
        "statistics",
    )
    x, pos_weight = standardise(x_raw, stats)  # statistics are numpy arrays, as uploaded
    local = LocalConfig(**{**config["local"], "pos_weight": pos_weight, "task": "binary"})
    number = STATS_ROUND
    for spec in config["models"]:
        model = make_model(spec["name"], x.shape[1], seed)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for r in range(1, int(spec["rounds"]) + 1):
            number += 1
            _wait_open(participant, number)
            start = time.perf_counter()
            state, _ = train_local(model, state, x, y, local, local_seed(seed, r, index))
            train_s = time.perf_counter() - start
            state = upload(state, number, spec["name"])
            log.write(
                json.dumps({"bank": bank, "round": number, "stage": "train", "train_s": train_s})
                + "\n"
            )
    log.close()
    participant.close()


if __name__ == "__main__":
    run_bank(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2])
