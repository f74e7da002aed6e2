"""Part 4 of the torture harness: dropped clients, silent members and a server outage.

A committee (3 of 5 by default, K_min = 4, 8 clients) runs one round per set of dropped
parties: the dropped clients never upload, the dropped members' agents are frozen
(SIGSTOP) for the round and thawed after. A set is *allowed* when at least K_min clients
upload and at least a quorum q = ⌈(n + t)/2⌉ of members answer (members decrypt only an
upload set a quorum endorsed): such a round must publish the plaintext weighted average
within the CKKS bound. A larger set must abort with no decryption share released: none on
the server and none in any member's share folder.

The outage trial kills the server right after a round closes (its members frozen for
that instant, so none has shared yet) and keeps it down for a few seconds longer than the
share timeout while the members keep polling it. Deadlines count only the server's
up-time, so after the restart the round must still publish with its first decryption set,
spending one decryption of τ.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clients.bench.reliability_common import (
    Figure,
    ServerFiles,
    average_bound,
    poll,
    time_to_ready,
    weighted_truth,
)
from clients.harness import LocalFederation
from he_agg.endorsement import quorum
from he_agg.packing import flatten
from he_agg.params import derive_parameters

__all__ = ["DropoutConfig", "DropoutFigures", "DropoutSet", "Outage", "dropout_sets", "run_dropout"]

_FEDERATION = "dropout"
_ENDORSE_PATIENCE = 10  # share timeouts a round waits for a quorum (he_agg.server.rounds)


@dataclass(frozen=True)
class DropoutConfig:
    clients: int = 8
    members: int = 5
    threshold: int = 3
    k_min: int = 4
    share_timeout: float = 2.0
    outage_extra: float = 3.0  # the outage lasts this much longer than the share timeout
    every_set: bool = True  # False: one set of each kind (the smoke test)
    parameters: int = 1500
    seed: int = 0


@dataclass(frozen=True)
class DropoutSet:
    dropped_clients: int
    dropped_members: tuple[int, ...]
    allowed: bool
    state: str = ""
    attempts: int = 0
    shares_on_server: int = 0
    shares_by_members: int = 0
    max_error: float = float("inf")
    bound: float = 0.0

    @property
    def passed(self) -> bool:
        if self.allowed:
            return self.state == "published" and self.max_error <= self.bound
        return self.state == "aborted" and self.shares_on_server == self.shares_by_members == 0


@dataclass(frozen=True)
class Outage:
    down_s: float  # from the kill until /ready answered again
    share_timeout: float
    state: str
    attempts: int
    decryptions_spent: int
    max_error: float
    bound: float

    @property
    def passed(self) -> bool:
        return (
            self.state == "published"
            and self.attempts == 1
            and self.decryptions_spent == 1
            and self.max_error <= self.bound
        )


@dataclass(frozen=True)
class DropoutFigures:
    sets: list[DropoutSet]
    outage: Outage
    committee: str
    duration_s: float

    def figures(self) -> list[Figure]:
        allowed = [s for s in self.sets if s.allowed]
        larger = [s for s in self.sets if not s.allowed]
        outage = self.outage
        return [
            Figure("dropout", "committee", self.committee),
            Figure(
                "dropout",
                "allowed sets publishing the right model",
                f"{sum(s.passed for s in allowed)} of {len(allowed)}",
                "all",
                all(s.passed for s in allowed),
            ),
            Figure(
                "dropout",
                "larger sets aborted with 0 shares released",
                f"{sum(s.passed for s in larger)} of {len(larger)}",
                "all",
                all(s.passed for s in larger),
            ),
            Figure(
                "dropout",
                "outage during decryption (down / share timeout)",
                f"{outage.state}, attempt {outage.attempts}, τ spent {outage.decryptions_spent} "
                f"({outage.down_s:.1f} s down / {outage.share_timeout:g} s)",
                "published, attempt 1",
                outage.passed,
            ),
        ]


def dropout_sets(config: DropoutConfig) -> list[DropoutSet]:
    """Every allowed set (0…clients − K_min dropped clients × every set of up to n − q
    members) and the larger ones (one client or one member too many, and both), or with
    ``every_set`` False one of each kind."""
    q = quorum(config.members, config.threshold)
    spare_clients = config.clients - config.k_min
    spare_members = config.members - q
    members = range(1, config.members + 1)
    if not config.every_set:
        return [
            DropoutSet(0, (), True),
            DropoutSet(spare_clients, tuple(members[:spare_members]), True),
            DropoutSet(spare_clients + 1, (), False),
            DropoutSet(0, tuple(members[: spare_members + 1]), False),
        ]
    few = [c for k in range(spare_members + 1) for c in itertools.combinations(members, k)]
    allowed = [DropoutSet(c, m, True) for c in range(spare_clients + 1) for m in few]
    larger = [DropoutSet(c, (), False) for c in range(spare_clients + 1, config.clients + 1)]
    larger += [DropoutSet(0, m, False) for m in itertools.combinations(members, spare_members + 1)]
    larger.append(DropoutSet(spare_clients + 1, tuple(members[: spare_members + 1]), False))
    return allowed + larger


class _Committee:
    """The federation of this part, with members that can be frozen and thawed."""

    def __init__(self, root: Path, config: DropoutConfig) -> None:
        self.config = config
        self.root = root
        params = derive_parameters(
            "torture-dropout",
            k_max=max(16, config.clients),
            committee_max=config.members,
            value_bits=12,
            tau=256,
            proofs=False,
        )
        self.params = params
        self.names = [f"client-{i}" for i in range(config.clients)]
        self.federation = LocalFederation(
            root,
            _FEDERATION,
            self.names,
            params=params,
            members=config.members,
            threshold=config.threshold,
            k_min=config.k_min,
            share_timeout=config.share_timeout,
            max_parameters=config.parameters + 10,
        )
        self.files = ServerFiles(root / "server")

    @contextmanager
    def frozen(self, members: tuple[int, ...]) -> Iterator[None]:
        """Members' agents stopped (SIGSTOP) inside the block, running again after it."""
        for index in members:
            os.kill(self.federation.processes[index - 1].pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for index in members:
                os.kill(self.federation.processes[index - 1].pid, signal.SIGCONT)

    def open_and_upload(
        self, uploading: list[str], number_seed: int
    ) -> tuple[int, list[tuple[np.ndarray, float]]]:
        """Open a round and have ``uploading`` submit (at once); the round and the updates."""
        admin = self.federation.admin_api()
        number = admin.open_round(_FEDERATION, 600).number
        rng = np.random.default_rng([self.config.seed, number_seed])
        updates = [
            (rng.uniform(-1, 1, self.config.parameters), float(rng.integers(10, 50)))
            for _ in uploading
        ]
        threads = [
            threading.Thread(target=self._submit, args=(name, number, vector, samples))
            for name, (vector, samples) in zip(uploading, updates, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return number, updates

    def _submit(self, name: str, number: int, vector: np.ndarray, samples: float) -> None:
        participant = self.federation.participant(name)
        participant.spool.folder = self.root / "spool" / name
        with participant:
            participant.submit({"w": vector}, samples, round=number)

    def finish(self, number: int, timeout: float) -> tuple[str, int]:
        finished = ("published", "aborted")
        poll(lambda: self.files.round_state(_FEDERATION, number)[0] in finished, timeout, 0.05)
        state, attempts, _ = self.files.round_state(_FEDERATION, number)
        return state, attempts

    def error(self, number: int, updates: list[tuple[np.ndarray, float]]) -> tuple[float, float]:
        """The published model's largest error against the plaintext average, and the bound."""
        truth, total = weighted_truth(updates)
        bound = average_bound(self.params, self.config.threshold, truth, total)
        model = self.federation.admin_api().model(_FEDERATION, number)
        return float(np.abs(flatten(model)[0] - truth).max()), bound

    def member_shares(self, number: int) -> int:
        """Share files (sent or pending) the members wrote for round ``number``."""
        return sum(
            1
            for folder in self.root.glob("member-*/state")
            for _ in folder.rglob(f"shares/{number}-*")
        )


def _run_set(committee: _Committee, chosen: DropoutSet, index: int) -> DropoutSet:
    config = committee.config
    uploading = committee.names[: config.clients - chosen.dropped_clients]
    patience = (_ENDORSE_PATIENCE + 3) * config.share_timeout + 60
    with committee.frozen(chosen.dropped_members):
        number, updates = committee.open_and_upload(uploading, index)
        committee.federation.admin_api().close_round(_FEDERATION, number)
        state, attempts = committee.finish(number, patience)
        shares = committee.files.shares(_FEDERATION, number)
        by_members = committee.member_shares(number)
        error, bound = (
            committee.error(number, updates) if state == "published" else (float("inf"), 0.0)
        )
    return DropoutSet(
        chosen.dropped_clients,
        chosen.dropped_members,
        chosen.allowed,
        state,
        attempts,
        shares,
        by_members,
        error,
        bound,
    )


def _run_outage(committee: _Committee, index: int) -> Outage:
    config = committee.config
    federation = committee.federation
    members = tuple(range(1, config.members + 1))
    spent_before = committee.files.decryptions_used(_FEDERATION)
    # all clients but one: the round stays open until it is closed below, members frozen
    number, updates = committee.open_and_upload(committee.names[:-1], index)
    with committee.frozen(members):  # no member shares before the kill
        federation.admin_api().close_round(_FEDERATION, number)
        killed = time.monotonic()
        federation.server.kill()
    time.sleep(config.share_timeout + config.outage_extra)  # the outage: members keep polling
    time_to_ready(federation.server, {}, 60)
    down = time.monotonic() - killed
    state, attempts = committee.finish(number, (_ENDORSE_PATIENCE + 3) * config.share_timeout + 60)
    error, bound = committee.error(number, updates) if state == "published" else (float("inf"), 0.0)
    spent = committee.files.decryptions_used(_FEDERATION) - spent_before
    return Outage(down, config.share_timeout, state, attempts, spent, error, bound)


def run_dropout(
    config: DropoutConfig, root: Path, on_set: Callable[[], None] = lambda: None
) -> DropoutFigures:
    started = time.monotonic()
    committee = _Committee(root, config)
    committee.federation.start()
    try:
        results = []
        for index, chosen in enumerate(dropout_sets(config)):
            results.append(_run_set(committee, chosen, index))
            on_set()
        outage = _run_outage(committee, len(results))
        on_set()
    finally:
        committee.files.close()
        committee.federation.stop()
    q = quorum(config.members, config.threshold)
    return DropoutFigures(
        results,
        outage,
        f"{config.threshold} of {config.members} (quorum {q}), K_min = {config.k_min}, "
        f"{config.clients} clients, share timeout {config.share_timeout:g} s",
        time.monotonic() - started,
    )
