"""Part 1 of the torture harness: kill -9 at random points of real rounds.

One federation (aggregator and committee agents, each its own process, over loopback) runs
round after round; each incarnation of the server is killed once, then restarted on the
same data folder and database while the clients and members carry on and retry. The
kinds of kill, balanced over the run:

* ``mid_body``: the harness SIGKILLs the server while upload bodies stream (clients send
  them over a slow link meanwhile, so the kill lands inside a body);
* ``upload.blob_committed`` (between the blob's fsync and the row's commit),
  ``upload.recorded`` (after the commit, before the reply), ``close.summed`` (mid-sum),
  ``share.stored`` and ``publish.combined`` (mid-decryption): the server's own crash points
  (``HE_AGG_CRASH_AT``, probability 1: it dies the first time it gets there);
* ``decrypting``: the harness SIGKILLs it at a random moment while a round decrypts.

After every kill the next kind is the least used, preferring one the current round can
still reach (at most 3 kills per round while it takes uploads, 1 at its close, 3 while it
decrypts), so the kinds stay even and a round takes several kills. The restarted server
is a process that was started ahead and waits with its imports done
(:mod:`clients.bench.reliability_server`); one restart in ten starts a new interpreter
instead, and both recovery times are reported. Clients submit through the SDK with two
quick retries, then submit again once the server is back (the spool re-sends the same
bytes). Every acknowledged upload is checked at the end against the database and the
blob files (lost, corrupted, duplicated), every re-send's bytes against the first try's,
and every round's model against the plaintext weighted average within the CKKS bound.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from clients.bench.reliability_common import (
    Figure,
    ServerFiles,
    UploadTap,
    average_bound,
    percentile,
    poll,
    tapped_participant,
    time_to_ready,
    weighted_truth,
)
from clients.bench.reliability_server import WarmServer
from clients.harness import LocalFederation
from clients.participant import Participant
from he_agg.api.models import UploadReceipt
from he_agg.errors import ServiceError, TransportError
from he_agg.packing import flatten
from he_agg.params import DEFAULT, ParameterSet, derive_parameters

__all__ = ["KILL_KINDS", "Kill", "KillConfig", "KillFigures", "RoundResult", "run_kill"]

KILL_KINDS = (
    "mid_body",
    "upload.blob_committed",
    "upload.recorded",
    "close.summed",
    "share.stored",
    "publish.combined",
    "decrypting",
)
_TIMED = frozenset({"mid_body", "decrypting"})  # landed by the harness, not a crash point
_PHASE = {  # the phase of a round in which each kind of kill lands
    "mid_body": "uploading",
    "upload.blob_committed": "uploading",
    "upload.recorded": "uploading",
    "close.summed": "closing",
    "share.stored": "decrypting",
    "publish.combined": "decrypting",
    "decrypting": "decrypting",
}
_AHEAD = {  # the phases a round in each phase still passes through
    "uploading": ("uploading", "closing", "decrypting"),
    "closing": ("closing", "decrypting"),
    "decrypting": ("decrypting",),
    "done": (),
}
_QUOTA = {"uploading": 3, "closing": 1, "decrypting": 3}  # kills per round, by phase
_FAILED_IN_A_ROW = 5  # a session stops (and says so) after this many wrong rounds in a row
_COLD_EVERY = 10  # one restart in ten starts a new interpreter; the others a waiting one
_FEDERATION = "torture"
_T = TypeVar("_T")


@dataclass(frozen=True)
class KillConfig:
    trials: int = 1000  # kills in all
    default_trials: int = 10  # of those, on the default parameter set (proofs); the rest fast
    clients: int = 8
    parameters: int = 1500  # model size: one or two ciphertexts
    seed: int = 0
    share_timeout: float = 4.0  # fast set: members share within about a second
    default_share_timeout: float = 30.0  # default set: members verify every upload's proofs


@dataclass(frozen=True)
class Kill:
    kind: str
    parameter_set: str
    round: int
    state: str  # the round's state when the server died
    recovery_s: float | None  # restart until /ready answered 200; None: killed again first
    at_s: float = 0.0  # when the server died, in seconds since the session started
    cold: bool = False  # restarted from a new interpreter (else from a waiting standby)


@dataclass(frozen=True)
class RoundResult:
    parameter_set: str
    number: int
    state: str
    attempts: int  # decryption sets named (each spends one of τ)
    max_error: float
    bound: float
    reason: str = ""  # why it was aborted, if it was

    @property
    def correct(self) -> bool:
        return self.state == "published" and self.max_error <= self.bound


@dataclass(frozen=True)
class Acknowledged:
    round: int
    client: str
    receipt: UploadReceipt


@dataclass(frozen=True)
class KillFigures:
    kills: int
    planned: int
    stopped_early: str  # why a session ended before its kills ("" if none did)
    by_kind: dict[str, int]
    unexpected_deaths: int  # the server died without being killed or armed
    acknowledged: int
    never_acknowledged: int  # uploads a client gave up on (target 0)
    lost: int
    corrupted: int
    duplicated: int
    resent_after_drop: int  # uploads sent again after a dropped connection
    resent_other_bytes: int  # retries whose bytes differ from the first try's (target 0)
    refused_retries: int  # retries answered with an error, e.g. 409 (target 0)
    rounds: int
    rounds_correct: int
    extra_attempts: int  # decryption attempts beyond one per round (τ spent by the kills)
    recovery_median_s: float  # warm restarts (a waiting interpreter takes over)
    recovery_p95_s: float
    recovery_max_s: float
    cold_recovery_median_s: float  # restarts from a new interpreter (one in ten)
    cold_recovery_p95_s: float
    cold_restarts: int
    duration_s: float
    parameter_sets: dict[str, str]
    kill_list: list[Kill] = field(repr=False)
    round_list: list[RoundResult] = field(repr=False)

    def figures(self) -> list[Figure]:
        kinds = ", ".join(f"{kind} {count}" for kind, count in self.by_kind.items())
        done = self.kills == self.planned and not self.stopped_early
        return [
            Figure(
                "kill -9",
                "kills (trials)",
                f"{self.kills} of {self.planned} ({kinds}){self.stopped_early and ': '}"
                f"{self.stopped_early}",
                f"{self.planned}",
                done,
            ),
            Figure("kill -9", "acknowledged uploads", str(self.acknowledged)),
            Figure("kill -9", "acknowledged uploads lost", str(self.lost), "0", self.lost == 0),
            Figure(
                "kill -9",
                "acknowledged uploads corrupted",
                str(self.corrupted),
                "0",
                self.corrupted == 0,
            ),
            Figure(
                "kill -9",
                "acknowledged uploads duplicated",
                str(self.duplicated),
                "0",
                self.duplicated == 0,
            ),
            Figure(
                "kill -9",
                "uploads never acknowledged",
                str(self.never_acknowledged),
                "0",
                self.never_acknowledged == 0,
            ),
            Figure(
                "kill -9",
                "re-sends after a dropped connection: other bytes / refused",
                f"{self.resent_other_bytes} / {self.refused_retries} of {self.resent_after_drop}",
                "0 / 0",
                self.resent_other_bytes == 0 and self.refused_retries == 0,
            ),
            Figure(
                "kill -9",
                "rounds publishing the right model",
                f"{self.rounds_correct} of {self.rounds}",
                "all",
                self.rounds_correct == self.rounds,
            ),
            Figure(
                "kill -9",
                "unexpected server deaths",
                str(self.unexpected_deaths),
                "0",
                self.unexpected_deaths == 0,
            ),
            Figure(
                "kill -9", "extra decryption attempts (τ spent by kills)", str(self.extra_attempts)
            ),
            Figure(
                "kill -9",
                "recovery, restart → /ready: median / p95 / max",
                f"{self.recovery_median_s:.2f} / {self.recovery_p95_s:.2f} / "
                f"{self.recovery_max_s:.2f} s (a waiting interpreter takes over)",
            ),
            Figure(
                "kill -9",
                "recovery from a new interpreter: median / p95",
                f"{self.cold_recovery_median_s:.2f} / {self.cold_recovery_p95_s:.2f} s "
                f"({self.cold_restarts} restarts)",
            ),
        ]


class _Session:
    """One federation under torture: the driver (rounds), the clients (threads) and the
    supervisor (a thread that kills and restarts the server)."""

    def __init__(
        self,
        root: Path,
        params: ParameterSet,
        label: str,
        config: KillConfig,
        counts: Counter[str],
        on_kill: Callable[[], None],
    ) -> None:
        self.label = label
        self.params = params
        self.config = config
        self.counts = counts
        self.on_kill = on_kill
        self.rng = random.Random(f"{config.seed}-{label}")
        names = [f"client-{i}" for i in range(config.clients)]
        self.federation = LocalFederation(
            root,
            _FEDERATION,
            names,
            params=params,
            members=3,
            threshold=2,
            k_min=max(2, config.clients // 2),
            share_timeout=config.share_timeout if label == "fast" else config.default_share_timeout,
            max_parameters=config.parameters + 10,
        )
        # sample counts n_k of 1–4 × this power of ten: large enough that the set's absolute
        # precision on Σ n_k·x_k (its error bound) leaves the average four digits
        self.sample_scale = 10
        while params.error_bound(2) / (config.clients * self.sample_scale) > 1e-4:
            self.sample_scale *= 10
        self.pace = threading.Event()
        self.tap = UploadTap(self.pace)
        self.files = ServerFiles(root / "server")
        self.participants: dict[str, Participant] = {}
        self.kills: list[Kill] = []
        self.server: WarmServer | None = None  # the federation's server, once run() swapped it
        self.phase_kills: Counter[tuple[int, str]] = Counter()  # (round, phase) → kills
        self.rounds: list[RoundResult] = []
        self.acks: list[Acknowledged] = []
        self.never_acknowledged = 0
        self.unexpected = 0
        self.lost = self.corrupted = self.duplicated = 0
        self.resent = self.resent_other_bytes = self.refused = 0
        self.current_round = 0
        self.arm: str | None = None
        self.target = 0
        self.started = time.monotonic()
        self.failure: BaseException | None = None
        self.stopped_early = ""  # why the session ended before its kills, if it did
        self.up = threading.Event()  # set while the server answers (cleared at each death)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the clients' threads report through it

    # ---- the run ------------------------------------------------------------------------
    def run(self, kills: int) -> None:
        self.target = kills
        self.started = time.monotonic()
        self.federation.start()
        try:
            for name in self.federation.clients:
                # two quick retries, then _upload waits for the restart and submits again
                self.participants[name] = tapped_participant(
                    self.federation, name, self.tap, self.federation.root / "spool", 0.05, 2
                )
            admin = self.federation.admin_api().http
            admin.backoff, admin.retries = 0.05, 2  # then _patient waits for the restart
            self._arm(self._next_kind("done"))
            # from here on the server restarts warm (reliability_server), cold every so often
            cold = self.federation.server
            cold.kill()
            self.server = WarmServer(cold.data_dir, cold.admin_keys, cold.port)
            self.federation.server = self.server
            time_to_ready(self.server, self._environment(), 60)
            self.up.set()
            supervisor = threading.Thread(target=self._supervise, daemon=True)
            supervisor.start()
            try:
                while len(self.kills) < kills and not self.stopped_early:
                    self._check()
                    self._round()
                    recent = self.rounds[-_FAILED_IN_A_ROW:]
                    if len(recent) == _FAILED_IN_A_ROW and not any(r.correct for r in recent):
                        self.stopped_early = f"{_FAILED_IN_A_ROW} rounds in a row went wrong"
            finally:
                self._stop.set()
                supervisor.join(timeout=120)
            self._check()
            if self._environment()["HE_AGG_CRASH_AT"]:  # armed for a kill no round will reach
                self.federation.server.kill()  # (not a trial: the checks want it disarmed)
                time_to_ready(self.federation.server, {"HE_AGG_CRASH_AT": ""}, 60)
            self._verify()
        finally:
            for participant in self.participants.values():
                participant.close()
            self.files.close()
            self.federation.stop()

    def _arm(self, kind: str | None) -> None:
        """The next kill is of ``kind`` (None: no more): the next start arms its crash
        point, or the harness lands it (and paces uploads for ``mid_body``)."""
        self.arm = kind
        if kind == "mid_body":
            self.pace.set()
        else:
            self.pace.clear()

    def _environment(self) -> dict[str, str]:
        point = self.arm if self.arm is not None and self.arm not in _TIMED else None
        return {"HE_AGG_CRASH_AT": f"{point}:1" if point else ""}

    # ---- the supervisor -------------------------------------------------------------------
    def _supervise(self) -> None:
        try:
            while not self._stop.is_set():
                self._watch()
        except BaseException as exc:  # the driver and the clients stop on it
            self.failure = exc
            raise

    def _watch(self) -> None:
        process = self.federation.server.process
        assert process is not None
        if process.poll() is not None:
            self.up.clear()
            armed = self.arm is not None and self.arm not in _TIMED
            if not armed:
                self.unexpected += 1
            self._restart(self.arm if armed and self.arm else "unexpected")
        elif self.arm in _TIMED and self._timed_kill_due(self.arm):
            self.up.clear()
            self.federation.server.kill()
            self._restart(self.arm)
        else:
            time.sleep(0.01)

    def _check(self) -> None:
        if self.failure is not None:
            raise RuntimeError("the supervisor failed") from self.failure

    def _timed_kill_due(self, kind: str) -> bool:
        """True once the harness's kill of ``kind`` is due: a random moment while a body
        streams (``mid_body``) or while the round decrypts (``decrypting``)."""
        if kind == "mid_body":
            if self.tap.gauge.count == 0:
                return False
            time.sleep(self.rng.uniform(0.02, 0.6 * self.tap.pace_seconds))
            return self.tap.gauge.count > 0
        if self._phase() != "decrypting":
            return False
        time.sleep(self.rng.uniform(0.0, 0.5))
        return self._phase() == "decrypting"

    def _phase(self) -> str:
        state, _, stored = self.files.round_state(_FEDERATION, self.current_round)
        if state == "open":
            return "uploading" if stored < self.config.clients else "closing"
        return "decrypting" if state == "decrypting" else "done"

    def _restart(self, kind: str) -> None:
        number = self.current_round
        died = time.monotonic() - self.started
        state, _, _ = self.files.round_state(_FEDERATION, number)
        phase = self._phase()
        if kind != "unexpected":
            self.counts[kind] += 1
            self.phase_kills[(number, _PHASE[kind])] += 1
        if kind == "publish.combined":
            # the round now waits a share timeout before it decrypts again (see the README):
            # more kills in it would only restart that wait, so the next ones go elsewhere
            self.phase_kills[(number, "decrypting")] = _QUOTA["decrypting"]
        done = len(self.kills) + 1 >= self.target
        self._arm(None if done else self._next_kind(phase))
        server = self.server
        assert server is not None
        server.cold = len(self.kills) % _COLD_EVERY == 0
        recovery = time_to_ready(server, self._environment(), 60)
        if recovery is not None:
            self.up.set()
        kill = Kill(kind, self.label, number, state, recovery, died, server.cold)
        self.kills.append(kill)
        self.on_kill()

    def _next_kind(self, phase: str) -> str:
        """The least-used kind, so the kinds stay even; of those tied, one the current
        round still passes through and has not had its share of kills in, if any (else it
        lands in a later round). Ties at random."""
        least = min(self.counts.values())
        tied = [kind for kind in KILL_KINDS if self.counts[kind] == least]
        room = {p for p in _AHEAD[phase] if self.phase_kills[(self.current_round, p)] < _QUOTA[p]}
        soon = [kind for kind in tied if _PHASE[kind] in room]
        return self.rng.choice(soon or tied)

    # ---- the driver -----------------------------------------------------------------------
    def _patient(self, call: Callable[[], _T]) -> _T:
        """``call``, again once the server is back whenever it could not be reached."""
        deadline = time.monotonic() + 600
        while True:
            try:
                return call()
            except TransportError:
                if time.monotonic() > deadline:
                    raise
                self._wait_up()

    def _wait_up(self, timeout: float = 120.0) -> None:
        """Until the supervisor has the server answering again."""
        deadline = time.monotonic() + timeout
        while not self.up.wait(0.5):
            self._check()
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not come back")

    def _round(self) -> None:
        admin = self.federation.admin_api()
        number = self._patient(lambda: admin.open_round(_FEDERATION, 600).number)
        self.current_round = number
        rng = np.random.default_rng([self.config.seed, number, len(self.label)])
        scale = self.sample_scale
        updates = {
            name: (rng.uniform(-1, 1, self.config.parameters), float(rng.integers(1, 5) * scale))
            for name in self.federation.clients
        }
        threads = [
            threading.Thread(target=self._upload, args=(name, number, vector, samples))
            for name, (vector, samples) in updates.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        finished = ("published", "aborted")

        def finished_or_failed() -> bool:
            self._check()
            return self.files.round_state(_FEDERATION, number)[0] in finished

        poll(finished_or_failed, 600, 0.05)
        state, attempts, _ = self.files.round_state(_FEDERATION, number)
        truth, total = weighted_truth(list(updates.values()))
        bound = average_bound(self.params, 2, truth, total)
        error = float("inf")
        if state == "published":
            model = self._patient(lambda: admin.model(_FEDERATION, number))
            error = float(np.abs(flatten(model)[0] - truth).max())
        reason = self.files.round_reason(_FEDERATION, number)
        self.rounds.append(RoundResult(self.label, number, state, attempts, error, bound, reason))

    def _upload(self, name: str, number: int, vector: np.ndarray, samples: float) -> None:
        """One client's submit, again (same update: the SDK re-sends its spooled bytes)
        whenever the server could not be reached, until it is acknowledged."""
        participant = self.participants[name]
        try:
            receipt = self._patient(
                lambda: participant.submit({"w": vector}, samples, round=number)
            )
        except (ServiceError, TransportError, TimeoutError, RuntimeError):
            with self._lock:
                self.never_acknowledged += 1  # refused, or the server never came back
            return
        with self._lock:
            self.acks.append(Acknowledged(number, name, receipt))

    # ---- the checks -----------------------------------------------------------------------
    def _verify(self) -> None:
        """Fill ``lost``, ``corrupted``, ``duplicated`` and the retry counts."""
        by_round: dict[int, set[str]] = {}
        for ack in self.acks:
            by_round.setdefault(ack.round, set()).add(ack.client)
            stored = {u.client: u for u in self.files.uploads(_FEDERATION, ack.round)}
            row = stored.get(ack.client)
            if row is None or not self.files.blob_matches(row.sha256):
                self.lost += 1
                continue
            wire = {
                a.sha256
                for a in self.tap.attempts
                if (a.round, a.client) == (ack.round, ack.client)
            }
            receipt = ack.receipt
            if row.sha256 != receipt.sha256 or row.size != receipt.size or wire != {row.sha256}:
                self.corrupted += 1
        for number, clients in by_round.items():
            self.duplicated += max(0, len(self.files.uploads(_FEDERATION, number)) - len(clients))
        self._count_retries()

    def _count_retries(self) -> None:
        """Uploads sent again after an attempt got no answer; every attempt's bytes must be
        the first attempt's, and every answer to a re-send 201 (or 503: busy)."""
        history: dict[tuple[int, str], list[tuple[str, int | str]]] = {}
        for attempt in self.tap.attempts:
            history.setdefault((attempt.round, attempt.client), []).append(
                (attempt.sha256, attempt.outcome)
            )
        for attempts in history.values():
            first = attempts[0][0]
            self.resent += any(isinstance(outcome, str) for _, outcome in attempts)
            self.resent_other_bytes += sum(digest != first for digest, _ in attempts)
            answers = [outcome for _, outcome in attempts[1:] if isinstance(outcome, int)]
            self.refused += sum(status not in (201, 503) for status in answers)


def run_kill(
    config: KillConfig, root: Path, on_kill: Callable[[], None] = lambda: None
) -> KillFigures:
    """Run ``config.trials`` kills (``default_trials`` of them on the default parameter set,
    with proofs; the others on a fast set without proofs) and report them."""
    started = time.monotonic()
    fast = derive_parameters(
        "torture-fast",
        k_max=max(16, config.clients),
        committee_max=3,
        value_bits=12,
        tau=8192,
        proofs=False,
    )
    default_trials = min(config.default_trials, config.trials)
    plan = [(fast, "fast", config.trials - default_trials), (DEFAULT, "default", default_trials)]
    counts: Counter[str] = Counter({kind: 0 for kind in KILL_KINDS})
    sessions = []
    for params, label, kills in plan:
        if kills <= 0:
            continue
        session = _Session(root / label, params, label, config, counts, on_kill)
        session.run(kills)
        sessions.append(session)
    kill_list = [k for s in sessions for k in s.kills if k.kind != "unexpected"]
    round_list = [r for s in sessions for r in s.rounds]
    recoveries = [k.recovery_s for k in kill_list if k.recovery_s is not None and not k.cold]
    cold = [k.recovery_s for k in kill_list if k.recovery_s is not None and k.cold]
    return KillFigures(
        kills=len(kill_list),
        planned=config.trials,
        stopped_early="; ".join(
            f"{s.label}: {s.stopped_early}" for s in sessions if s.stopped_early
        ),
        by_kind={kind: counts[kind] for kind in KILL_KINDS},
        unexpected_deaths=sum(s.unexpected for s in sessions),
        acknowledged=sum(len(s.acks) for s in sessions),
        never_acknowledged=sum(s.never_acknowledged for s in sessions),
        lost=sum(s.lost for s in sessions),
        corrupted=sum(s.corrupted for s in sessions),
        duplicated=sum(s.duplicated for s in sessions),
        resent_after_drop=sum(s.resent for s in sessions),
        resent_other_bytes=sum(s.resent_other_bytes for s in sessions),
        refused_retries=sum(s.refused for s in sessions),
        rounds=len(round_list),
        rounds_correct=sum(r.correct for r in round_list),
        extra_attempts=sum(max(0, r.attempts - 1) for r in round_list),
        recovery_median_s=percentile(recoveries, 50),
        recovery_p95_s=percentile(recoveries, 95),
        recovery_max_s=max(recoveries, default=float("nan")),
        cold_recovery_median_s=percentile(cold, 50),
        cold_recovery_p95_s=percentile(cold, 95),
        cold_restarts=len(cold),
        duration_s=time.monotonic() - started,
        parameter_sets={
            label: f"{params.name}: N={params.poly_degree}, proofs={params.proofs}"
            for params, label, kills in plan
            if kills > 0
        },
        kill_list=kill_list,
        round_list=round_list,
    )
