"""The round state machine: open → closed → decrypting → published, or aborted.

Routes call these functions; the arithmetic they need (adding uploads, combining
decryption shares, decoding) lives in the core and the committee packages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from he_agg.aggregate import aggregate_envelope
from he_agg.api.models import DecryptionRequest, RoundOut, UploadReceipt, UploadRecord
from he_agg.combine import DecryptionShare, combine
from he_agg.encoding import decode_aggregate
from he_agg.envelope import decode_upload
from he_agg.errors import HeAggError, PackingError, ServiceError
from he_agg.packing import Manifest, weighted_average
from he_agg.plain import decode_plain_upload
from he_agg.seal_context import seal_context
from he_agg.server import metrics
from he_agg.server.auth import Caller
from he_agg.server.federations import Federation, Federations
from he_agg.server.storage import BlobStore, Database

__all__ = ["Rounds"]

OPEN, DECRYPTING, PUBLISHED, ABORTED = "open", "decrypting", "published", "aborted"
log = logging.getLogger("he_agg.rounds")


class Rounds:
    def __init__(self, db: Database, blobs: BlobStore, federations: Federations) -> None:
        self.db = db
        self.blobs = blobs
        self.federations = federations

    # ---- reading -------------------------------------------------------------
    def _row(self, federation: str, number: int) -> dict[str, Any]:
        row = self.db.one(
            "SELECT * FROM rounds WHERE federation = ? AND number = ?", federation, number
        )
        if row is None:
            raise ServiceError(404, f"no round {number} in federation {federation!r}")
        return dict(row)

    def _uploads(self, federation: str, number: int) -> list[dict[str, Any]]:
        rows = self.db.all(
            "SELECT * FROM uploads WHERE federation = ? AND round = ? ORDER BY client",
            federation,
            number,
        )
        return [dict(r) for r in rows]

    def status(self, federation: str, number: int) -> RoundOut:
        row = self._row(federation, number)
        return RoundOut(
            federation=federation,
            number=number,
            state=str(row["state"]),
            deadline=float(row["deadline"]),
            uploads=[str(u["client"]) for u in self._uploads(federation, number)],
            reason=row["reason"],
            attempt=int(row["attempt"]),
            decryption_set=json.loads(str(row["decryption_set"] or "[]")),
            model_ready=row["model"] is not None,
        )

    def list_rounds(self, federation: str, state: str | None) -> list[RoundOut]:
        rows = self.db.all(
            "SELECT number FROM rounds WHERE federation = ? AND "
            "(? IS NULL OR state = ?) ORDER BY number",
            federation,
            state,
            state,
        )
        return [self.status(federation, int(r["number"])) for r in rows]

    # ---- opening and closing ---------------------------------------------------
    def open(self, federation: Federation, deadline_seconds: float) -> RoundOut:
        if self.federations.phase(federation) != "ready":
            raise ServiceError(409, "key generation has not finished; no round can open yet")
        with self.db.transaction() as connection:
            row = connection.execute(
                "SELECT MAX(number) AS n FROM rounds WHERE federation = ?", (federation.id,)
            ).fetchone()
            number = int(row["n"] or 0) + 1
            now = time.time()
            connection.execute(
                "INSERT INTO rounds (federation, number, state, deadline, opened) "
                "VALUES (?, ?, ?, ?, ?)",
                (federation.id, number, OPEN, now + deadline_seconds, now),
            )
        metrics.ROUNDS.labels(state=OPEN).inc()
        log.info("round opened", extra={"federation": federation.id, "round": number})
        return self.status(federation.id, number)

    def close(self, federation: Federation, number: int) -> RoundOut:
        """Close an open round now: abort below K_min, else aggregate and start decrypting.

        The aggregate is computed without holding the database lock (it can take seconds);
        if an upload lands meanwhile, the sum is redone with it.
        """
        k_min = int(federation.config["k_min"])
        for _ in range(3):
            if self._row(federation.id, number)["state"] != OPEN:
                return self.status(federation.id, number)
            uploads = self._uploads(federation.id, number)
            enough = len(uploads) >= k_min
            aggregate = None
            if enough and federation.mode == "ckks":
                aggregate = self._aggregate(federation, number, uploads)
            with self.db.transaction() as connection:
                if self._row(federation.id, number)["state"] != OPEN:
                    return self.status(federation.id, number)
                now = [u["sha256"] for u in self._uploads(federation.id, number)]
                if now != [u["sha256"] for u in uploads]:
                    continue  # an upload arrived while we were adding: include it
                if not enough:
                    self._abort(
                        connection,
                        federation.id,
                        number,
                        f"only {len(uploads)} uploads, K_min is {k_min}; nothing decrypted",
                    )
                elif aggregate is None:
                    self._publish_plaintext(connection, federation, number, uploads)
                else:
                    connection.execute(
                        "UPDATE rounds SET closed = ?, aggregate = ? WHERE federation = ? AND "
                        "number = ?",
                        (time.time(), aggregate, federation.id, number),
                    )
                    self._start_decryption(connection, federation, number, exclude=set())
            return self.status(federation.id, number)
        raise ServiceError(503, "uploads keep arriving; close the round again")

    def _abort(
        self, connection: sqlite3.Connection, federation: str, number: int, reason: str
    ) -> None:
        connection.execute(
            "UPDATE rounds SET state = ?, reason = ?, closed = COALESCE(closed, ?) "
            "WHERE federation = ? AND number = ?",
            (ABORTED, reason, time.time(), federation, number),
        )
        metrics.ROUNDS.labels(state=ABORTED).inc()
        log.warning(
            "round aborted", extra={"federation": federation, "round": number, "reason": reason}
        )

    def _blobs(self, uploads: list[dict[str, Any]]) -> Iterator[bytes]:
        for upload in uploads:
            yield self.blobs.read(str(upload["sha256"]))

    def _aggregate(self, federation: Federation, number: int, uploads: list[dict[str, Any]]) -> str:
        """Σ of the stored uploads (always rebuilt from the blobs), stored as an envelope."""
        params = federation.params
        decoded = (
            decode_upload(blob, params, federation=federation.id, round=number)
            for blob in self._blobs(uploads)
        )
        return self.blobs.put(aggregate_envelope(decoded, params, federation.id, number))

    def _start_decryption(
        self, connection: sqlite3.Connection, federation: Federation, number: int, exclude: set[int]
    ) -> None:
        fresh = self.federations.get(federation.id)
        tau = federation.params.tau
        if fresh.decryptions_used >= tau:
            self._abort(
                connection,
                federation.id,
                number,
                f"decryption budget τ={tau} is spent; a new key epoch is required",
            )
            return
        candidates = [m for m in federation.member_indices if m not in exclude]
        threshold = int(federation.config["threshold"])
        if len(candidates) < threshold:
            self._abort(
                connection,
                federation.id,
                number,
                f"only {len(candidates)} members answer; {threshold} are needed",
            )
            return
        chosen = candidates[:threshold]
        row = self._row(federation.id, number)
        connection.execute(
            "UPDATE rounds SET state = ?, attempt = ?, decryption_set = ?, attempt_started = ?, "
            "unresponsive = ? WHERE federation = ? AND number = ?",
            (
                DECRYPTING,
                int(row["attempt"]) + 1,
                json.dumps(chosen),
                time.time(),
                json.dumps(sorted(exclude)),
                federation.id,
                number,
            ),
        )
        connection.execute(
            "UPDATE federations SET decryptions_used = decryptions_used + 1 WHERE id = ?",
            (federation.id,),
        )
        metrics.ROUNDS.labels(state=DECRYPTING).inc()
        log.info(
            "decryption set named",
            extra={"federation": federation.id, "round": number, "set": chosen},
        )

    # ---- uploads -------------------------------------------------------------
    def existing_upload(self, federation: str, number: int, client: str) -> dict[str, Any] | None:
        row = self.db.one(
            "SELECT * FROM uploads WHERE federation = ? AND round = ? AND client = ?",
            federation,
            number,
            client,
        )
        return None if row is None else dict(row)

    def require_open(self, federation: str, number: int) -> None:
        row = self._row(federation, number)
        if row["state"] != OPEN or time.time() > float(row["deadline"]):
            raise ServiceError(409, f"round {number} is {row['state']}; it takes no uploads")

    def max_upload_bytes(self, federation: Federation, client: str) -> int:
        from he_agg.envelope import expected_size
        from he_agg.plain import plain_size

        most = int(federation.config["max_parameters"]) + 1
        if federation.mode == "plaintext":
            return plain_size(most)
        params = federation.params
        count = -(-most // params.slots)
        return expected_size(params, count, federation.id, client)

    def accept_upload(
        self,
        federation: Federation,
        number: int,
        client: str,
        caller: Caller,
        temporary: Path,
        digest: str,
        size: int,
    ) -> UploadReceipt:
        """Validate a fully received body and store it; nothing is kept if it is refused."""
        receipt = UploadReceipt(
            federation=federation.id, round=number, client=client, sha256=digest, size=size
        )
        previous = self.existing_upload(federation.id, number, client)
        if previous is not None:
            if previous["sha256"] != digest:
                raise ServiceError(409, "a different update from this client is already stored")
            return receipt
        self.require_open(federation.id, number)
        manifest = self._validate(federation, number, client, caller.signed.manifest, temporary)
        self._check_round(federation, number, manifest)  # before anything is written
        if not self.blobs.exists(digest):
            self.blobs.commit_file(temporary, digest)
        try:
            self._record_upload(federation, number, client, caller, digest, size, manifest)
        except ServiceError:
            if self.db.one("SELECT 1 FROM uploads WHERE sha256 = ?", digest) is None:
                self.blobs.remove(digest)  # lost a race (round closed or filled): keep nothing
            raise
        metrics.UPLOADS.inc()
        metrics.UPLOAD_BYTES.inc(size)
        log.info(
            "upload stored",
            extra={"federation": federation.id, "round": number, "client": client, "bytes": size},
        )
        if self._complete(federation, number):
            self.close(federation, number)
        return receipt

    def _check_round(self, federation: Federation, number: int, manifest: str) -> None:
        """The round still takes this upload: open, same model, fewer than K_max so far."""
        row = self._row(federation.id, number)
        if row["state"] != OPEN:
            raise ServiceError(409, f"round {number} closed while the upload arrived")
        if row["manifest"] is not None and row["manifest"] != manifest:
            raise ServiceError(422, "the manifest differs from the round's model")
        stored = len(self._uploads(federation.id, number))
        if federation.mode == "ckks" and stored >= federation.params.k_max:
            raise ServiceError(
                409,
                f"round {number} is full: the parameter set's noise budget "
                f"covers K_max = {federation.params.k_max} uploads",
            )

    def _record_upload(
        self,
        federation: Federation,
        number: int,
        client: str,
        caller: Caller,
        digest: str,
        size: int,
        manifest: str,
    ) -> None:
        with self.db.transaction() as connection:
            self._check_round(federation, number, manifest)  # again, under the lock
            if self._row(federation.id, number)["manifest"] is None:
                connection.execute(
                    "UPDATE rounds SET manifest = ? WHERE federation = ? AND number = ?",
                    (manifest, federation.id, number),
                )
            signed = caller.signed
            connection.execute(
                "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    federation.id,
                    number,
                    client,
                    digest,
                    size,
                    signed.signature.hex(),
                    signed.timestamp,
                    signed.nonce,
                    f"/v1/federations/{federation.id}/rounds/{number}/updates/{client}",
                    signed.manifest,  # exactly as signed: members re-check the signature
                    time.time(),
                ),
            )

    def _complete(self, federation: Federation, number: int) -> bool:
        """Every enrolled client has uploaded, or the round holds K_max uploads."""
        received = len(self._uploads(federation.id, number))
        full = federation.mode == "ckks" and received >= federation.params.k_max
        return received >= len(federation.client_names) or full

    def _validate(
        self, federation: Federation, number: int, client: str, manifest_text: str, temporary: Path
    ) -> str:
        try:
            manifest = Manifest.from_header(manifest_text)
        except PackingError as exc:
            raise ServiceError(422, f"the update needs a valid manifest header: {exc}") from exc
        problem, count = "", 0
        with open(temporary, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise ServiceError(422, "empty body")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as body:
                try:
                    count = self._count_values(federation, number, client, body)
                except HeAggError as exc:
                    problem = str(exc)  # raised below, once no array views the mapping
        if problem:
            raise ServiceError(422, f"invalid envelope: {problem}")
        params = federation.params
        plaintext = federation.mode == "plaintext"
        expected = manifest.size + 1 if plaintext else -(-(manifest.size + 1) // params.slots)
        if count != expected:
            raise ServiceError(422, "the envelope's size does not match its manifest")
        return manifest.to_json()

    @staticmethod
    def _count_values(federation: Federation, number: int, client: str, body: mmap.mmap) -> int:
        """Validate an envelope in place; values (plaintext) or ciphertexts (CKKS) it holds."""
        if federation.mode == "plaintext":
            return int(decode_plain_upload(memoryview(body)).size)
        upload = decode_upload(
            memoryview(body),
            federation.params,
            federation=federation.id,
            round=number,
            client=client,
        )
        return upload.count

    # ---- decryption ------------------------------------------------------------
    def decryption_request(self, federation: Federation, number: int) -> DecryptionRequest:
        row = self._row(federation.id, number)
        if row["aggregate"] is None:
            raise ServiceError(409, f"round {number} has no aggregate (state {row['state']})")
        return DecryptionRequest(
            round=number,
            state=str(row["state"]),
            attempt=int(row["attempt"]),
            decryption_set=json.loads(str(row["decryption_set"] or "[]")),
            aggregate_sha256=str(row["aggregate"]),
            uploads=[
                UploadRecord(**{k: u[k] for k in UploadRecord.model_fields})
                for u in self._uploads(federation.id, number)
            ],
        )

    def aggregate(self, federation: Federation, number: int) -> bytes:
        return self.blobs.read(self.decryption_request(federation, number).aggregate_sha256)

    def upload_blob(self, federation: Federation, number: int, client: str) -> bytes:
        upload = self.existing_upload(federation.id, number, client)
        if upload is None:
            raise ServiceError(404, f"no update from {client!r} in round {number}")
        return self.blobs.read(str(upload["sha256"]))

    def accept_share(
        self, federation: Federation, number: int, attempt: int, member: int, blob: bytes
    ) -> None:
        request = self.decryption_request(federation, number)
        digest = hashlib.sha256(blob).hexdigest()
        stored = self.db.one(
            "SELECT sha256 FROM shares WHERE federation = ? AND round = ? AND "
            "attempt = ? AND member = ?",
            federation.id,
            number,
            attempt,
            member,
        )
        if stored is not None:
            if stored["sha256"] != digest:
                raise ServiceError(409, "a different share from this member is already stored")
            return
        if request.state != DECRYPTING or attempt != request.attempt:
            raise ServiceError(409, f"round {number} is not waiting for attempt {attempt}")
        if member not in request.decryption_set:
            raise ServiceError(403, f"member {member} is not in the decryption set")
        try:
            share = DecryptionShare.from_bytes(blob, federation.params)
        except HeAggError as exc:
            raise ServiceError(422, f"invalid decryption share: {exc}") from exc
        if (share.member, list(share.decryption_set), share.aggregate_digest.hex()) != (
            member,
            request.decryption_set,
            request.aggregate_sha256,
        ):
            raise ServiceError(422, "the share names another member, set or aggregate")
        with self.db.transaction() as connection:
            connection.execute(
                "INSERT INTO shares VALUES (?, ?, ?, ?, ?)",
                (federation.id, number, attempt, member, self.blobs.put(blob)),
            )
        log.info(
            "decryption share stored",
            extra={
                "federation": federation.id,
                "round": number,
                "member": member,
                "attempt": attempt,
            },
        )
        self._maybe_publish(federation, number)

    def _maybe_publish(self, federation: Federation, number: int) -> None:
        with self.db.transaction() as connection:
            request = self.decryption_request(federation, number)
            rows = self.db.all(
                "SELECT member, sha256 FROM shares WHERE federation = ? AND "
                "round = ? AND attempt = ?",
                federation.id,
                number,
                request.attempt,
            )
            if request.state != DECRYPTING or len(rows) < len(request.decryption_set):
                return
            params = federation.params
            shares = [
                DecryptionShare.from_bytes(self.blobs.read(r["sha256"]), params) for r in rows
            ]
            aggregate = decode_upload(self.blobs.read(request.aggregate_sha256), params)
            plain = combine(aggregate.words[:, 0], shares, params)
            manifest = Manifest.from_json(str(self._row(federation.id, number)["manifest"]))
            decoded = decode_aggregate(plain, seal_context(params))
            self._store_model(connection, federation.id, number, decoded, manifest)

    def _publish_plaintext(
        self,
        connection: sqlite3.Connection,
        federation: Federation,
        number: int,
        uploads: list[dict[str, Any]],
    ) -> None:
        total: np.ndarray | None = None
        for blob in self._blobs(uploads):
            values = decode_plain_upload(blob).astype(np.float64)
            total = values if total is None else total + values
        assert total is not None
        manifest = Manifest.from_json(str(self._row(federation.id, number)["manifest"]))
        self._store_model(connection, federation.id, number, total, manifest)

    def _store_model(
        self,
        connection: sqlite3.Connection,
        federation: str,
        number: int,
        decoded: np.ndarray,
        manifest: Manifest,
    ) -> None:
        try:
            average = weighted_average(decoded, manifest.size)
        except PackingError as exc:
            self._abort(connection, federation, number, f"decryption failed: {exc}")
            return
        model = self.blobs.put(average.astype("<f8").tobytes())
        connection.execute(
            "UPDATE rounds SET state = ?, model = ? WHERE federation = ? AND number = ?",
            (PUBLISHED, model, federation, number),
        )
        metrics.ROUNDS.labels(state=PUBLISHED).inc()
        log.info("model published", extra={"federation": federation, "round": number})

    def model(self, federation: Federation, number: int) -> tuple[str, bytes]:
        row = self._row(federation.id, number)
        if row["model"] is None:
            raise ServiceError(409, f"round {number} has no published model (state {row['state']})")
        return str(row["manifest"]), self.blobs.read(str(row["model"]))

    # ---- time ------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Close rounds past their deadline or already complete (say, the server died while
        closing one); replace decryption sets that did not answer."""
        for row in self.db.all(
            "SELECT federation, number, deadline FROM rounds WHERE state = ?", OPEN
        ):
            federation = self.federations.get(row["federation"])
            number = int(row["number"])
            if float(row["deadline"]) <= now or self._complete(federation, number):
                self.close(federation, number)
        for row in self.db.all("SELECT * FROM rounds WHERE state = ?", DECRYPTING):
            federation = self.federations.get(row["federation"])
            timeout = float(federation.config["share_timeout_seconds"])
            if now - float(row["attempt_started"]) < timeout:
                continue
            with self.db.transaction() as connection:
                answered = {
                    r["member"]
                    for r in self.db.all(
                        "SELECT member FROM shares WHERE federation = ? AND round = ? "
                        "AND attempt = ?",
                        federation.id,
                        row["number"],
                        row["attempt"],
                    )
                }
                silent = set(json.loads(row["decryption_set"])) - answered
                exclude = set(json.loads(row["unresponsive"])) | silent
                log.warning(
                    "decryption set timed out",
                    extra={
                        "federation": federation.id,
                        "round": row["number"],
                        "silent": sorted(silent),
                    },
                )
                self._start_decryption(connection, federation, int(row["number"]), exclude)
