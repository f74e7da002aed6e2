"""How the simulation averages one round's updates: plaintext FedAvg, every party of the
real protocol in this process, or the REST stack with each party its own process."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from clients.encrypt_pool import pool_for
from clients.upload import prepare_upload
from he_agg.aggregate import aggregate_uploads
from he_agg.api.states import FederationMode
from he_agg.combine import average_from_shares
from he_agg.params import ParameterSet
from he_agg.wellformed import NO_ROSTER

if TYPE_CHECKING:
    from clients.participant import Participant

__all__ = ["Aggregator", "HttpAggregator", "InProcessAggregator", "PlainAggregator"]

Vector = npt.NDArray[np.float64]
Outcome = tuple[Vector, int, dict[str, float]]  # the average, bytes uploaded, seconds per stage
FEDERATION = "simulation"


class Aggregator:
    """Average ``vectors`` with ``weights``; ``names`` are the clients' enrolled names."""

    def average(
        self, round_number: int, names: Sequence[str], vectors: list[Vector], weights: list[float]
    ) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PlainAggregator(Aggregator):
    """Plaintext FedAvg in float64: the baseline with the same seeds."""

    def average(
        self, round_number: int, names: Sequence[str], vectors: list[Vector], weights: list[float]
    ) -> Outcome:
        start = time.perf_counter()
        average = np.average(np.stack(vectors), axis=0, weights=weights)
        uploaded = sum(4 * (v.size + 1) for v in vectors)  # float32 [w, w·x]
        return average, uploaded, {"aggregate": time.perf_counter() - start}


def _as_update(vector: Vector) -> dict[str, Vector]:
    return {"values": vector}


class InProcessAggregator(Aggregator):
    """Every party in this process, every message through its wire format."""

    def __init__(self, params: ParameterSet, members: int, threshold: int) -> None:
        from keys.committee import run_committee_setup

        self.params = params
        self.setup = run_committee_setup(params, FEDERATION, members, threshold)

    def average(
        self, round_number: int, names: Sequence[str], vectors: list[Vector], weights: list[float]
    ) -> Outcome:
        from keys.decrypt import decryption_share

        seconds: dict[str, float] = {}
        start = time.perf_counter()
        public = self.setup.public
        pool = pool_for(public, -(-(vectors[0].size + 1) // self.params.slots))
        blobs = [
            prepare_upload(
                _as_update(v),
                w,
                public,
                federation=FEDERATION,
                round=round_number,
                client=name,
                roster_digest=NO_ROSTER,  # in process: nothing checks the proofs' context
                pool=pool,  # every core, for a large model
            )[0]
            for name, v, w in zip(names, vectors, weights, strict=True)
        ]
        seconds["encrypt"] = time.perf_counter() - start
        start = time.perf_counter()
        aggregate = aggregate_uploads(blobs, self.params, federation=FEDERATION, round=round_number)
        seconds["aggregate"] = time.perf_counter() - start
        start = time.perf_counter()
        digest = hashlib.sha256(aggregate.tobytes()).digest()
        subset = tuple(range(1, self.setup.threshold + 1))
        shares = [
            decryption_share(
                self.setup.members[k - 1].threshold_share,
                aggregate[:, 1],
                subset,
                self.params,
                digest,
            )
            for k in subset
        ]
        average = average_from_shares(aggregate[:, 0], shares, self.params, vectors[0].size)
        seconds["decrypt"] = time.perf_counter() - start
        return average, sum(len(b) for b in blobs), seconds


class HttpAggregator(Aggregator):
    """The REST stack: uvicorn and the committee as processes, clients over loopback HTTP;
    with ``mode`` PLAINTEXT, a plaintext federation on the same server (no committee)."""

    def __init__(
        self,
        params: ParameterSet,
        clients: int,
        per_round: int,
        members: int,
        threshold: int,
        max_parameters: int = 10_000_000,
        mode: FederationMode = FederationMode.CKKS,
        log_dir: Path | None = None,
    ) -> None:
        from clients.harness.local import LocalFederation

        self.log_dir = log_dir

        self.folder = tempfile.TemporaryDirectory(prefix="he-agg-sim-")
        self.local = LocalFederation(
            Path(self.folder.name),
            FEDERATION,
            [f"client-{i}" for i in range(clients)],
            params=params,
            members=members,
            threshold=threshold,
            k_min=per_round,
            max_parameters=max_parameters,
            mode=mode,
        )
        self.mode = mode
        self.participants: dict[str, Participant] = {}
        self.local.start()

    def _participant(self, name: str) -> Participant:
        if name not in self.participants:
            self.participants[name] = self.local.participant(name)
        return self.participants[name]

    def average(
        self, round_number: int, names: Sequence[str], vectors: list[Vector], weights: list[float]
    ) -> Outcome:
        seconds: dict[str, float] = {}
        number = self.local.admin_api().open_round(FEDERATION, 3600).number
        start = time.perf_counter()
        clients = [self._participant(name) for name in names]

        def submit(client: Participant, vector: Vector, weight: float) -> int:
            return client.submit(_as_update(vector), weight, round=number).size

        # the clients upload at once, as real ones would; their encryption shares one
        # process pool per key (clients.encrypt_pool), so the cores are used, not oversold
        with ThreadPoolExecutor(max_workers=len(clients)) as threads:
            uploaded = sum(threads.map(submit, clients, vectors, weights))
        secure = self.mode == FederationMode.CKKS
        seconds["encrypt+upload" if secure else "upload"] = time.perf_counter() - start
        start = time.perf_counter()
        self.local.admin_api().close_round(FEDERATION, number)
        model = self._participant(names[0]).wait_for_model(number, timeout=300, poll=0.1)
        seconds["aggregate+decrypt" if secure else "aggregate"] = time.perf_counter() - start
        return np.asarray(model["values"], dtype=np.float64), uploaded, seconds

    def close(self) -> None:
        for participant in self.participants.values():
            participant.close()
        self.local.stop()
        if self.log_dir is not None:  # the service's JSON-lines logs, kept for the caller
            self.log_dir.mkdir(parents=True, exist_ok=True)
            root = Path(self.folder.name)
            for log in [root / "server" / "server.log", *sorted(root.glob("member-*/agent.log"))]:
                if log.exists():
                    shutil.copyfile(log, self.log_dir / f"{log.parent.name}.log")
        self.folder.cleanup()
