"""The round state machine on its own storage: a crash while closing is finished by the clock."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from he_agg.api.models import FederationCreate
from he_agg.packing import flatten, weighted_vector
from he_agg.params import DEFAULT
from he_agg.plain import encode_plain_upload
from he_agg.server.auth import Caller, PendingAuth
from he_agg.server.config import Settings
from he_agg.server.deps import AppState
from he_agg.server.rounds import Rounds
from he_agg.server.store import FileBlobStore, open_store


def _machine(folder: Path, database: str) -> AppState:
    """The server's state on existing files, as a freshly started process would build it."""
    settings = Settings(data_dir=folder, database=database)
    return AppState.build(settings, open_store(database), FileBlobStore(folder / "blobs"))


def test_a_round_left_open_by_a_crash_is_closed_on_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    state = _machine(tmp_path, database_url)
    rounds, federations = state.rounds, state.federations
    clients = [{"name": f"c{i}", "signing_key": f"{i:064x}"} for i in range(2)]
    federations.create(
        FederationCreate(id="f", mode="plaintext", threshold=1, k_min=2, clients=clients),
        admin_key="ad" * 32,
    )
    federation = federations.get("f")
    number = rounds.open(federation, deadline_seconds=3600).number
    update = {"w": np.array([0.5, -1.0])}
    manifest = flatten(update)[1].to_json()

    def upload(name: str, samples: float) -> None:
        body = encode_plain_upload(weighted_vector(flatten(update)[0] * samples, 1.0, DEFAULT))
        path = tmp_path / f"{name}.upload"
        path.write_bytes(body)
        at = int(time.time())
        signed = PendingAuth("00" * 32, at, name * 8, b"\x00" * 64, manifest, name * 32, len(body))
        caller = Caller("00" * 32, False, signed)
        state.intake.accept(federation, number, name, caller, path, len(body))

    upload("c0", 1.0)
    upload("c1", 3.0)  # complete: no upload request closes it, the clock does
    assert state.rounds.status("f", number).state == "open"

    def crash(*args: object) -> None:
        raise SystemExit("killed while closing")

    monkeypatch.setattr(Rounds, "close", crash)
    with pytest.raises(SystemExit):
        state.rounds.tick(time.time())  # the server dies while its clock closes the round
    monkeypatch.undo()

    state.store.close()
    restarted = _machine(tmp_path, database_url)  # a new process on the same files
    assert restarted.rounds.status("f", number).state == "open"
    restarted.rounds.tick(time.time())
    status = restarted.rounds.status("f", number)
    assert status.state == "published" and status.uploads == ["c0", "c1"]
    _, values = restarted.publisher.model(federation, number)
    assert np.allclose(np.frombuffer(values, dtype="<f8"), [1.0, -2.0])  # mean of x and 3x
