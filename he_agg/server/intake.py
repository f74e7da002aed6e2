"""Taking an upload: the size limit, validation of the envelope in place, and storing it.

A body is streamed to a scratch file by the route; here it is validated from that file
(``FileBytes``: positioned reads, not a mapping), a window of ciphertexts at a time (a
proof group at a time where proofs are carried: each proof covers its group), never read
whole into arrays; at most ``validation_slots`` uploads are validated at once, so
validation's memory is bounded by slots × window whatever the number of uploads in
flight. It is then checked against the round (open, same model, fewer than K_max so far),
moved to its content address and recorded, or refused with nothing kept; once recorded
it is added to the round's running sum.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from he_agg.api import paths
from he_agg.api.models import UploadReceipt
from he_agg.api.states import FederationMode, RoundState
from he_agg.envelope import EnvelopeView, expected_size
from he_agg.errors import HeAggError, PackingError, ServiceError, StoreConflict
from he_agg.packing import Manifest
from he_agg.plain import decode_plain_upload, plain_size
from he_agg.public import PublicContext
from he_agg.rlwe import key_rows
from he_agg.seal_codec import ciphertext_from_bytes
from he_agg.server import metrics
from he_agg.server.auth import Caller
from he_agg.server.faults import crash_point
from he_agg.server.federations import Epoch, Federation, round_row
from he_agg.server.store import BlobStore, FileBytes, Store, UploadRow
from he_agg.server.sums import RoundSums, window_size
from he_agg.wellformed import ProofContext, groups, verify_group

__all__ = ["Intake"]

log = logging.getLogger("he_agg.rounds")


class Intake:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        sums: RoundSums,
        on_complete: Callable[[Federation, int], None] | None = None,
        validation_slots: int = 2,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.sums = sums
        self._slots = threading.BoundedSemaphore(validation_slots)
        # None (the server): the clock closes a complete round within a tick, so no upload
        # request waits on the aggregation; a callable closes it in the request instead
        self.on_complete = on_complete

    def existing(self, federation: str, number: int, client: str) -> UploadRow | None:
        return self.store.upload(federation, number, client)

    def require_open(self, federation: str, number: int) -> None:
        row = round_row(self.store, federation, number)
        if row.state != RoundState.OPEN or time.time() > row.deadline:
            raise ServiceError(409, f"round {number} is {row.state}; it takes no uploads")

    def require_enrolled(self, federation: Federation, number: int, client: str) -> None:
        """The client is in the roster of the round's key epoch (403 otherwise)."""
        epoch = federation.at(round_row(self.store, federation.id, number).epoch)
        if client not in epoch.client_names:
            raise ServiceError(
                403, f"{client!r} is not a client of key epoch {epoch.number} (round {number})"
            )

    def max_bytes(self, federation: Federation, client: str) -> int:
        most = federation.spec.max_parameters + 1
        if federation.mode == FederationMode.PLAINTEXT:
            return plain_size(most)
        params = federation.params
        return expected_size(params, -(-most // params.slots), federation.id, client)

    def accept(
        self,
        federation: Federation,
        number: int,
        client: str,
        caller: Caller,
        temporary: Path,
        size: int,
    ) -> UploadReceipt:
        """Validate a fully received body and store it; nothing is kept if it is refused."""
        digest = caller.body_sha256
        receipt = UploadReceipt(
            federation=federation.id, round=number, client=client, sha256=digest, size=size
        )
        previous = self.existing(federation.id, number, client)
        if previous is not None:
            if previous.sha256 != digest:
                raise ServiceError(409, "a different update from this client is already stored")
            return receipt
        self.require_open(federation.id, number)
        with self._slots:  # validation's memory: slots × one window
            manifest = self._validate(federation, number, client, caller.signed.manifest, temporary)
        self._check_round(federation, number, manifest)  # before anything is written
        self.blobs.commit_file(temporary, digest)  # an identical blob already there is kept
        crash_point("upload.blob_committed")
        row = UploadRow(
            federation=federation.id,
            round=number,
            client=client,
            sha256=digest,
            size=size,
            signature=caller.signed.signature.hex(),
            timestamp=caller.signed.timestamp,
            nonce=caller.signed.nonce,
            target=paths.update(federation.id, number, client),
            manifest=caller.signed.manifest,  # exactly as signed: members re-check it
            received=time.time(),
        )
        try:
            self._record(federation, row, manifest)
        except ServiceError:
            if not self.store.blob_in_use(digest):
                self.blobs.remove(digest)  # lost a race (round closed or filled): keep nothing
            raise
        crash_point("upload.recorded")
        if federation.mode == FederationMode.CKKS:
            self.sums.add((federation.id, number), federation.params, row)
        metrics.UPLOADS.inc()
        metrics.UPLOAD_BYTES.inc(size)
        log.info(
            "upload stored",
            extra={"federation": federation.id, "round": number, "client": client, "bytes": size},
        )
        if self.on_complete is not None:
            self.on_complete(federation, number)
        return receipt

    def _check_round(self, federation: Federation, number: int, manifest: str) -> None:
        """The round still takes this upload: open, same model, fewer than K_max so far."""
        row = self.store.round(federation.id, number)
        if row is None or row.state != RoundState.OPEN:
            raise ServiceError(409, f"round {number} closed while the upload arrived")
        if row.manifest is not None and row.manifest != manifest:
            raise ServiceError(422, "the manifest differs from the round's model")
        stored = len(self.store.uploads(federation.id, number))
        if federation.mode == FederationMode.CKKS and stored >= federation.params.k_max:
            raise ServiceError(
                409,
                f"round {number} is full: the parameter set's noise budget "
                f"covers K_max = {federation.params.k_max} uploads",
            )

    def _record(self, federation: Federation, upload: UploadRow, manifest: str) -> None:
        with self.store.transaction():
            self._check_round(federation, upload.round, manifest)  # again, serialised
            row = self.store.round(federation.id, upload.round)
            if row is not None and row.manifest is None:
                self.store.save_round(dataclasses.replace(row, manifest=manifest))
            try:
                self.store.insert_upload(upload)
            except StoreConflict as exc:
                raise ServiceError(409, "an update from this client is already stored") from exc

    def _count_values(
        self, federation: Federation, number: int, epoch: Epoch, client: str, body: FileBytes
    ) -> int:
        """Validate an envelope in place, window by window, its proofs of well-formed
        ciphertexts included when the parameter set requires them; the values (plaintext)
        or ciphertexts (CKKS) it holds."""
        if federation.mode == FederationMode.PLAINTEXT:
            return int(decode_plain_upload(body[:]).size)
        params = federation.params
        view = EnvelopeView.parse(
            body,
            params,
            federation=federation.id,
            round=number,
            client=client,
            epoch=epoch.number,
        )
        if not params.proofs:
            view.check_words(window_size(params))
            return view.count
        if epoch.row.public_key is None:
            raise ServiceError(409, f"key epoch {epoch.number} has no collective key yet")
        public = PublicContext(params, ciphertext_from_bytes(self.blobs.read(epoch.row.public_key)))
        rows = key_rows(public)
        context = ProofContext(
            params.fingerprint, federation.id, epoch.number, number, client, epoch.roster_digest
        )
        for (first, size), proof in zip(groups(view.count), view.proofs(), strict=True):
            words = view.words(first, size)  # one proof group
            verify_group(words, proof, rows, params, replace(context, first_index=first))
        return view.count

    def _validate(
        self, federation: Federation, number: int, client: str, manifest_text: str, temporary: Path
    ) -> str:
        try:
            manifest = Manifest.from_header(manifest_text)
        except PackingError as exc:
            raise ServiceError(422, f"the update needs a valid manifest header: {exc}") from exc
        with open(temporary, "rb") as handle:
            body = FileBytes(handle.fileno())
            if len(body) == 0:
                raise ServiceError(422, "empty body")
            try:
                epoch = federation.at(round_row(self.store, federation.id, number).epoch)
                count = self._count_values(federation, number, epoch, client, body)
            except HeAggError as exc:
                raise ServiceError(422, f"invalid envelope: {exc}") from exc
        params = federation.params
        plaintext = federation.mode == FederationMode.PLAINTEXT
        expected = manifest.size + 1 if plaintext else -(-(manifest.size + 1) // params.slots)
        if count != expected:
            raise ServiceError(422, "the envelope's size does not match its manifest")
        return manifest.to_json()
