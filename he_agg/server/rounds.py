"""The round state machine: open → decrypting → published, or aborted.

A round takes uploads while open (:mod:`he_agg.server.intake`). It closes at its
deadline, once every enrolled client has uploaded, or when it holds K_max uploads:
below K_min it is aborted and nothing is decrypted; otherwise the aggregate is stored
and a decryption set of t members is named (:mod:`he_agg.server.publishing` takes the
shares and publishes the model). A set that does not answer in time is replaced, and
every named set counts against the budget τ of the round's key epoch.

Key epochs. A round is opened under the current epoch and keeps it to the end: its
uploads, aggregate, endorsements and shares all name it. Before an epoch's τ runs out
(``rekey_below`` decryptions left, counting rounds still open), the next epoch's DKG is
started under the same roster; once its key is ready it becomes current. A round cannot
open while the current epoch's remaining τ is all promised to open rounds (409, retry).
An epoch that is no longer current and has no round left to decrypt is retired: members
destroy its secret shares.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from he_agg.aggregate import envelope_of_sum
from he_agg.api.models import RoundOut
from he_agg.api.states import FederationMode, KeygenPhase, RoundState
from he_agg.endorsement import quorum
from he_agg.errors import ServiceError
from he_agg.server import metrics
from he_agg.server.faults import crash_point
from he_agg.server.federations import Epoch, Federation, Federations, round_row
from he_agg.server.keygen import KeygenRelay
from he_agg.server.publishing import Publisher, abort_round
from he_agg.server.store import BlobStore, RoundRow, Store, UploadRow
from he_agg.server.sums import RoundSums
from he_agg.wording import counted

__all__ = ["Rounds"]

log = logging.getLogger("he_agg.rounds")
# share timeouts a round waits for a quorum of endorsements before it is aborted
ENDORSE_PATIENCE = 10


class Rounds:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        federations: Federations,
        keygen: KeygenRelay,
        publisher: Publisher,
        sums: RoundSums,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.sums = sums
        self.federations = federations
        self.keygen = keygen
        self.publisher = publisher
        # Deadlines for members count only while this server is up: after a restart (or an
        # outage of the server) every member gets a full share timeout again, and a set is
        # replaced, spending τ, only when its members could reach the server and did not.
        self.up_since = time.time()

    # ---- reading -------------------------------------------------------------
    def row(self, federation: str, number: int) -> RoundRow:
        return round_row(self.store, federation, number)

    def status(self, federation: str, number: int) -> RoundOut:
        return self._out(self.row(federation, number))

    def _out(self, row: RoundRow) -> RoundOut:
        return RoundOut(
            federation=row.federation,
            number=row.number,
            state=row.state,
            deadline=row.deadline,
            uploads=[u.client for u in self.store.uploads(row.federation, row.number)],
            reason=row.reason,
            attempt=row.attempt,
            decryption_set=list(row.decryption_set),
            model_ready=row.model is not None,
            epoch=row.epoch,
        )

    def list_rounds(self, federation: str, state: RoundState | None) -> list[RoundOut]:
        return [self._out(row) for row in self.store.rounds(federation, state)]

    # ---- opening and closing ---------------------------------------------------
    def open(self, federation: Federation, deadline_seconds: float) -> RoundOut:
        if self.keygen.phase(federation) != KeygenPhase.READY:
            raise ServiceError(409, "key generation has not finished; no round can open yet")
        now = time.time()
        with self.store.transaction():
            federation = self.federations.get(federation.id)
            if federation.mode == FederationMode.CKKS and self._left(federation) <= 0:
                self.maybe_rekey(federation)
                raise ServiceError(
                    409,
                    f"key epoch {federation.epoch}'s decryption budget is spent or promised to "
                    f"open rounds; epoch {federation.epoch + 1}'s key is being generated: "
                    "open the round again shortly",
                )
            row = self.store.insert_round(
                federation.id, now + deadline_seconds, now, federation.epoch
            )
        self.maybe_rekey(self.federations.get(federation.id))
        metrics.ROUNDS.labels(state=RoundState.OPEN).inc()
        log.info(
            "round opened",
            extra={"federation": federation.id, "round": row.number, "epoch": row.epoch},
        )
        return self._out(row)

    def _left(self, federation: Federation) -> int:
        """The current epoch's τ less what is spent and what open rounds will spend."""
        current = federation.current
        waiting = sum(
            1
            for r in self.store.rounds(federation.id, RoundState.OPEN)
            if r.epoch == current.number
        )
        return federation.params.tau - current.row.decryptions_used - waiting

    def maybe_rekey(self, federation: Federation) -> None:
        """Start the next epoch's DKG (same roster) once the current epoch has
        ``rekey_below`` decryptions left and no later epoch is under way."""
        if federation.mode != FederationMode.CKKS or federation.newest.number != federation.epoch:
            return
        if self._left(federation) > federation.rekey_below:
            return
        try:
            self.federations.start_epoch(
                federation, federation.current.row.roster, federation.epoch + 1
            )
        except ServiceError:  # another request started it first
            return

    def retire_finished_epochs(self, federation: Federation) -> None:
        """Retire every epoch before the current one that has no round left to decrypt."""
        busy = {
            r.epoch
            for state in (RoundState.OPEN, RoundState.DECRYPTING)
            for r in self.store.rounds(federation.id, state)
        }
        for row in federation.epoch_rows:
            if row.epoch < federation.epoch and row.retired is None and row.epoch not in busy:
                self.store.retire_epoch(federation.id, row.epoch, time.time())
                log.info(
                    "key epoch retired", extra={"federation": federation.id, "epoch": row.epoch}
                )

    def complete(self, federation: Federation, number: int) -> bool:
        """Every client of the round's epoch has uploaded, or the round holds K_max uploads."""
        epoch = federation.at(self.row(federation.id, number).epoch)
        received = len(self.store.uploads(federation.id, number))
        full = federation.mode == FederationMode.CKKS and received >= federation.params.k_max
        return received >= len(epoch.client_names) or full

    def close_if_complete(self, federation: Federation, number: int) -> None:
        if self.complete(federation, number):
            self.close(federation, number)

    def close(self, federation: Federation, number: int) -> RoundOut:
        """Close an open round now: abort below K_min, else aggregate and start decrypting.

        The sum was kept as the uploads arrived (``RoundSums``; after a restart the close
        adds what it lacks from the blobs), so closing writes it out; that happens outside
        any transaction, and if an upload lands meanwhile the close runs again with it.
        """
        for _ in range(3):
            if self.row(federation.id, number).state != RoundState.OPEN:
                return self.status(federation.id, number)
            uploads = self.store.uploads(federation.id, number)
            epoch = federation.at(self.row(federation.id, number).epoch)
            enough = len(uploads) >= epoch.k_min
            aggregate, summed = None, {u.client: u.sha256 for u in uploads}
            if enough and federation.mode == FederationMode.CKKS:
                aggregate, summed = self._aggregate(federation, epoch, number, uploads)
                crash_point("close.summed")
            with self.store.transaction():
                row = self.row(federation.id, number)
                if row.state != RoundState.OPEN:
                    return self._out(row)
                stored = self.store.uploads(federation.id, number)
                if {u.client: u.sha256 for u in stored} != summed:
                    continue  # an upload arrived while we were closing: include it
                self._finish_close(federation, row, stored, aggregate)
            self.sums.drop((federation.id, number))
            return self.status(federation.id, number)
        raise ServiceError(503, "uploads keep arriving; close the round again")

    def _finish_close(
        self,
        federation: Federation,
        row: RoundRow,
        uploads: list[UploadRow],
        aggregate: str | None,
    ) -> None:
        k_min = federation.at(row.epoch).k_min
        if len(uploads) < k_min:
            have = counted(len(uploads), "upload")
            abort_round(self.store, row, f"only {have}, K_min is {k_min}; nothing decrypted")
        elif aggregate is None:
            self.publisher.publish_plaintext(federation, row, uploads)
        else:
            closed = dataclasses.replace(row, closed=time.time(), aggregate=aggregate)
            self.store.save_round(closed)
            self.start_decryption(federation, closed, exclude=set())

    def _aggregate(
        self, federation: Federation, epoch: Epoch, number: int, uploads: list[UploadRow]
    ) -> tuple[str, dict[str, str]]:
        """The round's sum as a stored envelope, and the uploads it adds (client → sha256):
        those given and any stored meanwhile."""
        params = federation.params
        total, summed = self.sums.total((federation.id, number), params, uploads)
        envelope = envelope_of_sum(total, params, federation.id, number, epoch.number)
        return self.blobs.put(envelope), summed

    def start_decryption(self, federation: Federation, row: RoundRow, exclude: set[int]) -> None:
        """Name the next decryption set (a new attempt, counted against the τ of the round's
        epoch), or abort."""
        epoch = self.federations.get(federation.id).at(row.epoch)
        used = epoch.row.decryptions_used
        tau = federation.params.tau
        if used >= tau:
            abort_round(
                self.store,
                row,
                f"key epoch {row.epoch}'s decryption budget τ={tau} is spent; nothing decrypted",
            )
            return
        candidates = [m for m in epoch.member_indices if m not in exclude]
        threshold = epoch.threshold
        if len(candidates) < threshold:
            abort_round(
                self.store,
                row,
                f"only {counted(len(candidates), 'member')} can answer; {threshold} are needed",
            )
            return
        chosen = tuple(candidates[:threshold])
        self.store.save_round(
            dataclasses.replace(
                row,
                state=RoundState.DECRYPTING,
                attempt=row.attempt + 1,
                decryption_set=chosen,
                attempt_started=time.time(),
                unresponsive=tuple(sorted(exclude)),
            )
        )
        self.store.count_decryption(federation.id, row.epoch)
        self.maybe_rekey(self.federations.get(federation.id))
        metrics.ROUNDS.labels(state=RoundState.DECRYPTING).inc()
        log.info(
            "decryption set named",
            extra={"federation": federation.id, "round": row.number, "set": list(chosen)},
        )

    # ---- time ------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Close rounds past their deadline or already complete (say, the server died while
        closing one); replace decryption sets that did not answer in time."""
        open_rounds = self.store.rounds(state=RoundState.OPEN)
        self.sums.keep_only({(row.federation, row.number) for row in open_rounds})
        for row in open_rounds:
            federation = self.federations.get(row.federation)
            if row.deadline <= now or self.complete(federation, row.number):
                self.close(federation, row.number)
        for row in self.store.rounds(state=RoundState.DECRYPTING):
            federation = self.federations.get(row.federation)
            answered = self.store.shares(row.federation, row.number, row.attempt)
            if len(answered) >= len(row.decryption_set):
                self.publisher.publish_if_complete(federation, row.number)
                continue  # published now (or aborted by a failed combine): never replaced
            timeout = federation.spec.share_timeout_seconds
            if not self._has_quorum(federation, row):
                # no share can come before a quorum endorses the upload set: wait for one
                waited = now - max(row.closed or now, self.up_since)
                if waited >= ENDORSE_PATIENCE * timeout:
                    self._abort_unendorsed(federation, row)
                continue
            if now - max(row.attempt_started or 0.0, self.up_since) >= timeout:
                self._replace_silent_set(federation, row)
        for federation_id in sorted({e.federation for e in self.store.unsettled_epochs()}):
            self.settle_epochs(self.federations.get(federation_id))

    def settle_epochs(self, federation: Federation) -> None:
        """Switch to a newer epoch whose key is ready; retire epochs with nothing left."""
        self.keygen.switch_if_ready(federation)
        self.retire_finished_epochs(self.federations.get(federation.id))

    def _has_quorum(self, federation: Federation, row: RoundRow) -> bool:
        epoch = federation.at(row.epoch)
        needed = quorum(len(epoch.member_indices), epoch.threshold)
        return len(self.store.endorsements(row.federation, row.number)) >= needed

    def _abort_unendorsed(self, federation: Federation, stale: RoundRow) -> None:
        with self.store.transaction():
            row = self.row(stale.federation, stale.number)
            if row.state != RoundState.DECRYPTING or self._has_quorum(federation, row):
                return
            endorsed = len(self.store.endorsements(row.federation, row.number))
            epoch = federation.at(row.epoch)
            needed = quorum(len(epoch.member_indices), epoch.threshold)
            reason = (
                f"only {counted(endorsed, 'member')} endorsed the upload set; a quorum is {needed}"
            )
            abort_round(self.store, row, reason)

    def _replace_silent_set(self, federation: Federation, stale: RoundRow) -> None:
        with self.store.transaction():
            row = self.row(stale.federation, stale.number)
            if row.state != RoundState.DECRYPTING or row.attempt != stale.attempt:
                return  # published or replaced meanwhile
            answered = {
                s.member for s in self.store.shares(row.federation, row.number, row.attempt)
            }
            silent = set(row.decryption_set) - answered
            log.warning(
                "decryption set timed out",
                extra={"federation": row.federation, "round": row.number, "silent": sorted(silent)},
            )
            if not answered:
                # no share of this attempt reached us, so none can have leaked through us:
                # the attempt is not counted against τ (members count what they release in
                # their own ledgers, which is what bounds the leak; this count is the plan)
                self.store.count_decryption(row.federation, row.epoch, -1)
            self.start_decryption(federation, row, set(row.unresponsive) | silent)
