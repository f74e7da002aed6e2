"""From a closed round to a published model: the decryption request members verify,
members' endorsements of the round's upload set, their shares, and the FedAvg vector
(combining is public arithmetic in the core).

The server keeps endorsements (:mod:`he_agg.endorsement`) only to relay them: members
decrypt only for an upload set a quorum of them endorsed, and check every signature
themselves. The server's own checks (signed by that member, for the uploads it lists)
just keep garbage out of the store; they protect nothing a member relies on."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import BinaryIO

import numpy as np

from he_agg.api.models import DecryptionRequest, UploadRecord
from he_agg.api.states import RoundState
from he_agg.combine import DecryptionShare, average_from_shares
from he_agg.endorsement import Endorsement, quorum, upload_set_digest
from he_agg.envelope import decode_upload
from he_agg.errors import (
    HeAggError,
    PackingError,
    ProtocolError,
    ServiceError,
    SignatureError,
    StoreConflict,
)
from he_agg.modarith import F64Array
from he_agg.packing import Manifest, weighted_average
from he_agg.plain import decode_plain_upload
from he_agg.server import metrics
from he_agg.server.faults import crash_point
from he_agg.server.federations import Federation, round_row
from he_agg.server.store import BlobStore, RoundRow, ShareRow, Store, UploadRow

__all__ = ["Publisher", "abort_round", "upload_record"]

log = logging.getLogger("he_agg.rounds")


def abort_round(store: Store, row: RoundRow, reason: str) -> None:
    """Move a round to aborted, keeping when it closed; nothing of it is decrypted after."""
    closed = row.closed or time.time()
    store.save_round(
        dataclasses.replace(row, state=RoundState.ABORTED, reason=reason, closed=closed)
    )
    metrics.ROUNDS.labels(state=RoundState.ABORTED).inc()
    log.warning(
        "round aborted", extra={"federation": row.federation, "round": row.number, "reason": reason}
    )


def upload_record(row: UploadRow) -> UploadRecord:
    return UploadRecord(
        client=row.client,
        sha256=row.sha256,
        size=row.size,
        signature=row.signature,
        timestamp=row.timestamp,
        nonce=row.nonce,
        target=row.target,
        manifest=row.manifest,
    )


class Publisher:
    def __init__(self, store: Store, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs

    # ---- what members read -----------------------------------------------------
    def decryption_request(self, federation: Federation, number: int) -> DecryptionRequest:
        row = round_row(self.store, federation.id, number)
        if row.aggregate is None:
            raise ServiceError(409, f"round {number} has no aggregate (state {row.state})")
        return DecryptionRequest(
            round=number,
            epoch=row.epoch,
            state=row.state,
            attempt=row.attempt,
            decryption_set=list(row.decryption_set),
            aggregate_sha256=row.aggregate,
            uploads=[upload_record(u) for u in self.store.uploads(federation.id, number)],
            endorsements={
                m: body for m, (_, body) in self.store.endorsements(federation.id, number).items()
            },
        )

    def aggregate(self, federation: Federation, number: int) -> bytes:
        return self.blobs.read(self.decryption_request(federation, number).aggregate_sha256)

    def upload_records(self, federation: Federation, number: int) -> list[UploadRecord]:
        round_row(self.store, federation.id, number)  # 404 for a round that does not exist
        return [upload_record(row) for row in self.store.uploads(federation.id, number)]

    def open_upload(self, federation: Federation, number: int, client: str) -> BinaryIO:
        """The stored upload, opened (a blob collected meanwhile stays readable through
        it): the route streams it a window at a time instead of holding it in memory."""
        upload = self.store.upload(federation.id, number, client)
        if upload is None:
            raise ServiceError(404, f"no update from {client!r} in round {number}")
        try:
            return self.blobs.path(upload.sha256).open("rb")
        except FileNotFoundError as exc:  # collected between the row and the open
            raise ServiceError(404, f"no update from {client!r} in round {number}") from exc

    # ---- endorsements --------------------------------------------------------------
    def accept_endorsement(
        self, federation: Federation, number: int, member: int, body: bytes
    ) -> None:
        """Store one member's endorsement of the round's upload set (idempotent: the same
        endorsement again is accepted, a different one is 409)."""
        endorsement = self._parse_endorsement(body)
        canonical = endorsement.to_bytes().decode()
        stored = self.store.endorsements(federation.id, number).get(member)
        if stored is not None:
            if stored[1] != canonical:
                raise ServiceError(409, f"member {member} already endorsed another statement")
            return
        row = round_row(self.store, federation.id, number)
        if row.state != RoundState.DECRYPTING:
            raise ServiceError(409, f"round {number} is not decrypting (state {row.state})")
        epoch = federation.at(row.epoch)
        expected = (federation.id, row.epoch, number, member)
        got = (endorsement.federation, endorsement.epoch, endorsement.round, endorsement.member)
        if got != expected:
            raise ServiceError(
                422, "the endorsement names another federation, epoch, round or member"
            )
        listed = upload_set_digest(self.store.uploads(federation.id, number))
        if endorsement.upload_set.hex() != listed:
            raise ServiceError(422, "the endorsement is for another upload set than the round's")
        try:
            endorsement.verify(epoch.member_key(member))
        except SignatureError as exc:
            raise ServiceError(422, "the endorsement is not signed by its member") from exc
        try:
            self.store.insert_endorsement(federation.id, number, member, listed, canonical)
        except StoreConflict as exc:  # the same member's retry won a race
            again = self.store.endorsements(federation.id, number).get(member)
            if again is None or again[1] != canonical:
                raise ServiceError(
                    409, f"member {member} already endorsed another statement"
                ) from exc
            return
        log.info(
            "endorsement stored",
            extra={"federation": federation.id, "round": number, "member": member},
        )
        self._start_clock_at_quorum(federation, number)

    def _start_clock_at_quorum(self, federation: Federation, number: int) -> None:
        """The named set can share only once a quorum has endorsed: its share timeout runs
        from then, so slow endorsers do not make the server replace a set that was waiting."""
        with self.store.transaction():
            row = round_row(self.store, federation.id, number)
            epoch = federation.at(row.epoch)
            needed = quorum(len(epoch.member_indices), epoch.threshold)
            if len(self.store.endorsements(federation.id, number)) != needed:
                return
            if row.state == RoundState.DECRYPTING:
                self.store.save_round(dataclasses.replace(row, attempt_started=time.time()))

    @staticmethod
    def _parse_endorsement(body: bytes) -> Endorsement:
        try:
            return Endorsement.from_bytes(body)
        except ProtocolError as exc:
            raise ServiceError(422, f"invalid endorsement: {exc}") from exc

    # ---- shares ------------------------------------------------------------------
    def accept_share(
        self, federation: Federation, number: int, attempt: int, member: int, blob: bytes
    ) -> None:
        """Store one member's share (idempotent), then publish once the set is complete."""
        request = self.decryption_request(federation, number)
        digest = hashlib.sha256(blob).hexdigest()
        stored = {s.member: s.sha256 for s in self.store.shares(federation.id, number, attempt)}
        if member in stored:
            if stored[member] != digest:
                raise ServiceError(409, "a different share from this member is already stored")
            self._maybe_publish(federation, number)  # a crash may have cut the publish short
            return
        if request.state != RoundState.DECRYPTING or attempt != request.attempt:
            raise ServiceError(409, f"round {number} is not waiting for attempt {attempt}")
        if member not in request.decryption_set:
            raise ServiceError(403, f"member {member} is not in the decryption set")
        try:
            share = DecryptionShare.from_bytes(blob, federation.params)
        except HeAggError as exc:
            raise ServiceError(422, f"invalid decryption share: {exc}") from exc
        if (
            share.member,
            list(share.decryption_set),
            share.aggregate_digest.hex(),
            share.epoch,
        ) != (member, request.decryption_set, request.aggregate_sha256, request.epoch):
            raise ServiceError(422, "the share names another member, set, aggregate or epoch")
        row = ShareRow(federation.id, number, attempt, member, self.blobs.put(blob))
        try:
            self.store.insert_share(row)
        except StoreConflict:
            return  # the same member's retry won a race; the check above runs again next time
        crash_point("share.stored")
        log.info(
            "decryption share stored",
            extra={"federation": federation.id, "round": number, "member": member},
        )
        self._maybe_publish(federation, number)

    def publish_if_complete(self, federation: Federation, number: int) -> None:
        """Combine a decrypting round whose current set has all answered (the server died
        after the last share was stored, before the model was): no new attempt, no τ."""
        self._maybe_publish(federation, number)

    def _maybe_publish(self, federation: Federation, number: int) -> None:
        """Combine a complete share set and publish. The combine (reading the shares and
        the aggregate, decoding) runs outside any transaction, so uploads and other rounds
        never wait on it; the result is stored only if the round is still decrypting the
        same attempt (another request or the clock may have published it meanwhile)."""
        row = round_row(self.store, federation.id, number)
        rows = self.store.shares(federation.id, number, row.attempt)
        if row.state != RoundState.DECRYPTING or len(rows) < len(row.decryption_set):
            return
        assert row.aggregate is not None and row.manifest is not None
        params = federation.params
        shares = [DecryptionShare.from_bytes(self.blobs.read(r.sha256), params) for r in rows]
        aggregate = decode_upload(self.blobs.read(row.aggregate), params)
        size = Manifest.from_json(row.manifest).size
        failure, model = None, None
        try:
            average = average_from_shares(aggregate.words[:, 0], shares, params, size)
            model = self.blobs.put(average.astype("<f8").tobytes())
        except PackingError as exc:
            failure = f"decryption failed: {exc}"
        crash_point("publish.combined")
        with self.store.transaction():
            current = round_row(self.store, federation.id, number)
            if current.state != RoundState.DECRYPTING or current.attempt != row.attempt:
                return  # published (or replaced) meanwhile
            if failure is not None:
                abort_round(self.store, current, failure)
            else:
                assert model is not None
                self._published(current, model)

    def publish_plaintext(
        self, federation: Federation, row: RoundRow, uploads: list[UploadRow]
    ) -> None:
        """The benchmarks' baseline mode: the server adds plaintext uploads itself."""
        total = np.zeros(0)
        for upload in uploads:
            values = decode_plain_upload(self.blobs.read(upload.sha256)).astype(np.float64)
            total = values if total.size == 0 else total + values
        assert row.manifest is not None
        try:
            average = weighted_average(total, Manifest.from_json(row.manifest).size)
        except PackingError as exc:
            abort_round(self.store, row, f"averaging failed: {exc}")
            return
        self._store_model(dataclasses.replace(row, closed=time.time()), average)

    def _store_model(self, row: RoundRow, average: F64Array) -> None:
        model = self.blobs.put(average.astype("<f8").tobytes())
        crash_point("publish.combined")
        self._published(row, model)

    def _published(self, row: RoundRow, model: str) -> None:
        self.store.save_round(dataclasses.replace(row, state=RoundState.PUBLISHED, model=model))
        metrics.ROUNDS.labels(state=RoundState.PUBLISHED).inc()
        log.info("model published", extra={"federation": row.federation, "round": row.number})

    def model(self, federation: Federation, number: int) -> tuple[str, bytes]:
        row = round_row(self.store, federation.id, number)
        if row.model is None or row.manifest is None:
            raise ServiceError(409, f"round {number} has no published model (state {row.state})")
        return row.manifest, self.blobs.read(row.model)
