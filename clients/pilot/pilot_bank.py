"""One bank of the finance pilot, in its own process: it reads only its own rows.

    python -m clients.pilot.pilot_bank CONFIG.json BANK

For each scheduled round it waits for the round to open, trains locally from the last
published model, encrypts under the collective key, uploads, and waits for the next
model. Timings per round go to a JSON-lines file for the pilot's overhead table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import torch

from clients.participant import Participant
from clients.pilot.shared import STATS_ROUND, load_data, make_model, standardise
from clients.simulation.training import LocalConfig, local_seed, train_local
from clients.upload import prepare_upload
from he_agg.api.states import RoundState
from he_agg.errors import ServiceError
from he_agg.public import PublicContext
from he_agg.roster import SignedRoster
from keys.identity import load_identity

__all__ = ["run_bank"]


def _wait_open(participant: Participant, number: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if participant.round_status(number).state == RoundState.OPEN:
                return
        except ServiceError as exc:
            if exc.status != 404:
                raise
        time.sleep(0.05)
    raise TimeoutError(f"round {number} never opened")


@dataclass
class _BankRounds:
    """A bank's side of each round: encrypt, upload, wait for the model, log the timings."""

    name: str
    federation: str
    participant: Participant
    public: PublicContext
    weight: float  # n_k / (largest bank's n)
    log: IO[str]

    def write(self, entry: dict[str, Any]) -> None:
        self.log.write(json.dumps(entry) + "\n")
        self.log.flush()

    def round(self, update: dict[str, Any], number: int, label: str) -> dict[str, Any]:
        start = time.perf_counter()
        body, manifest = prepare_upload(
            update,
            self.weight,
            self.public,
            federation=self.federation,
            round=number,
            client=self.name,
            roster_digest=(
                self.participant.follow_rosters().roster.digest
                if self.public.params.proofs
                else None
            ),
        )
        encrypted = time.perf_counter()
        self.participant.upload(number, body, manifest)
        sent = time.perf_counter()
        model = self.participant.wait_for_model(number, poll=0.05)
        self.write(
            {
                "bank": self.name,
                "round": number,
                "stage": label,
                "bytes": len(body),
                "parameters": manifest.size,
                "encrypt_s": encrypted - start,
                "upload_s": sent - encrypted,
                "wait_model_s": time.perf_counter() - sent,
            }
        )
        return model

    def statistics(self, x_raw: npt.NDArray[np.float64], y: torch.Tensor) -> dict[str, Any]:
        """The statistics round: this bank's feature means, second moments and positive rate."""
        _wait_open(self.participant, STATS_ROUND)
        x64 = x_raw.astype(np.float64)
        update = {
            "mean": x64.mean(axis=0),
            "sq": (x64**2).mean(axis=0),
            "pos": np.array([float(y.float().mean())]),
        }
        return self.round(update, STATS_ROUND, "statistics")


def _train_models(
    bank: _BankRounds,
    config: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    local: LocalConfig,
    index: int,
) -> None:
    """Every scheduled model, round after round, each from the last published state."""
    seed, number = int(config["seed"]), STATS_ROUND
    for spec in config["models"]:
        model = make_model(spec["name"], x.shape[1], seed)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for r in range(1, int(spec["rounds"]) + 1):
            number += 1
            _wait_open(bank.participant, number)
            start = time.perf_counter()
            state, _ = train_local(model, state, x, y, local, local_seed(seed, r, index))
            train_s = time.perf_counter() - start
            state = bank.round(state, number, spec["name"])
            bank.write({"bank": bank.name, "round": number, "stage": "train", "train_s": train_s})


def run_bank(config: dict[str, Any], bank: str) -> None:
    torch.set_num_threads(1)
    seed = int(config["seed"])
    data = load_data(config["data"], seed)
    rows = data.bank_rows(bank)
    x_raw, y = data.x[rows], torch.as_tensor(data.y[rows])
    identity = load_identity(Path(config["keys"][bank]), os.environ["HE_AGG_PASSPHRASE"])
    participant = Participant(
        config["server"],
        config["federation"],
        bank,
        identity.signing,
        verify=config.get("ca_file") or True,  # the CA the server's certificate chains to
        show_progress=False,
        roster=SignedRoster.from_json(Path(config["roster"]).read_text()),
    )
    public = participant.fetch_public_context()
    weight = len(rows) / float(config["weight_unit"])
    with open(config["timings"], "a") as log:  # appended to for the whole run
        rounds = _BankRounds(bank, config["federation"], participant, public, weight, log)
        stats = rounds.statistics(x_raw, y)
        x, pos_weight = standardise(x_raw, stats)  # statistics are numpy arrays, as uploaded
        local = LocalConfig(**{**config["local"], "pos_weight": pos_weight, "task": "binary"})
        _train_models(rounds, config, x, y, local, data.bank_names.index(bank))
    participant.close()


if __name__ == "__main__":
    run_bank(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2])
