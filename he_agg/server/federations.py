"""Federations and their key generation: enrolment, commit-then-reveal, share relay."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from he_agg.api.models import FederationCreate, FederationOut, KeygenStatus
from he_agg.crs import common_reference_polynomial
from he_agg.errors import CommitmentError, HeAggError, ParameterError, ProtocolError, ServiceError
from he_agg.params import DEFAULT, ParameterSet
from he_agg.request_signing import verify_signature
from he_agg.seal_codec import ciphertext_to_bytes
from he_agg.server.storage import BlobStore, Database
from keys import keygen
from keys.shamir import EncryptedShare

__all__ = ["Federation", "Federations", "Party"]

COMMITMENT, PK_SHARE, SHAMIR = "commitment", "pk_share", "shamir"


@dataclass(frozen=True)
class Party:
    name: str
    role: str  # "client" or "member"
    signing_key: str
    encryption_key: str | None
    index: int | None


@dataclass(frozen=True)
class Federation:
    id: str
    config: dict[str, Any]
    epoch: int
    public_key: str | None
    decryptions_used: int

    @cached_property
    def params(self) -> ParameterSet:
        return ParameterSet.from_dict(self.config["parameters"])

    @property
    def mode(self) -> str:
        return str(self.config["mode"])

    @property
    def member_indices(self) -> list[int]:
        return sorted(int(m["index"]) for m in self.config["members"])

    @property
    def client_names(self) -> list[str]:
        return [str(c["name"]) for c in self.config["clients"]]

    def member_key(self, index: int) -> bytes:
        for member in self.config["members"]:
            if member["index"] == index:
                return bytes.fromhex(member["signing_key"])
        raise ServiceError(404, f"no member {index}")


class Federations:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs

    # ---- enrolment -------------------------------------------------------------
    def create(self, body: FederationCreate) -> FederationOut:
        try:
            params = DEFAULT if body.parameters is None else ParameterSet.from_dict(body.parameters)
        except ParameterError as exc:
            raise ServiceError(422, str(exc)) from exc
        if len(body.members) > params.committee_max:
            raise ServiceError(
                422,
                f"{len(body.members)} members; the parameter set's noise "
                f"budget allows {params.committee_max}",
            )
        if body.k_min > params.k_max:
            raise ServiceError(422, f"k_min exceeds the parameter set's K_max = {params.k_max}")
        config = body.model_dump()
        config["parameters"] = params.to_dict()
        try:
            with self.db.transaction() as connection:
                connection.execute(
                    "INSERT INTO federations (id, config, created) VALUES (?, ?, ?)",
                    (body.id, json.dumps(config), time.time()),
                )
                for client in body.clients:
                    connection.execute(
                        "INSERT INTO parties VALUES (?, ?, 'client', ?, NULL, NULL)",
                        (body.id, client.name, client.signing_key),
                    )
                for member in body.members:
                    connection.execute(
                        "INSERT INTO parties VALUES (?, ?, 'member', ?, ?, ?)",
                        (
                            body.id,
                            member.name,
                            member.signing_key,
                            member.encryption_key,
                            member.index,
                        ),
                    )
        except sqlite3.IntegrityError as exc:
            raise ServiceError(409, f"federation {body.id!r} already exists") from exc
        return self.describe(self.get(body.id))

    def get(self, federation_id: str) -> Federation:
        row = self.db.one("SELECT * FROM federations WHERE id = ?", federation_id)
        if row is None:
            raise ServiceError(404, f"no federation {federation_id!r}")
        return Federation(
            row["id"],
            json.loads(row["config"]),
            row["epoch"],
            row["public_key"],
            row["decryptions_used"],
        )

    def party(self, federation_id: str, key: str) -> Party | None:
        row = self.db.one(
            "SELECT * FROM parties WHERE federation = ? AND signing_key = ?", federation_id, key
        )
        if row is None:
            return None
        return Party(
            row["name"], row["role"], row["signing_key"], row["encryption_key"], row["member_index"]
        )

    def describe(self, federation: Federation) -> FederationOut:
        return FederationOut(
            id=federation.id,
            config=federation.config,
            epoch=federation.epoch,
            keygen_phase=self.phase(federation),
            public_key_ready=federation.public_key is not None,
            decryptions_used=federation.decryptions_used,
        )

    # ---- key generation --------------------------------------------------------
    def _values(self, federation: Federation, kind: str) -> dict[tuple[int, int], str]:
        rows = self.db.all(
            "SELECT sender, recipient, value FROM keygen WHERE federation = ? AND epoch = ? "
            "AND kind = ?",
            federation.id,
            federation.epoch,
            kind,
        )
        return {(r["sender"], r["recipient"]): r["value"] for r in rows}

    def phase(self, federation: Federation) -> str:
        if federation.mode == "plaintext":
            return "ready"
        n = len(federation.member_indices)
        if len(self._values(federation, COMMITMENT)) < n:
            return "commit"
        if len(self._values(federation, PK_SHARE)) < n:
            return "reveal"
        if len(self._values(federation, SHAMIR)) < n * n:
            return "deal"
        return "ready"

    def status(self, federation: Federation) -> KeygenStatus:
        return KeygenStatus(
            epoch=federation.epoch,
            phase=self.phase(federation),
            commitments={s: v for (s, _), v in self._values(federation, COMMITMENT).items()},
            public_key_shares=sorted(s for s, _ in self._values(federation, PK_SHARE)),
            shamir_shares=sorted(self._values(federation, SHAMIR)),
        )

    def _store(
        self, federation: Federation, kind: str, sender: int, recipient: int, value: str
    ) -> bool:
        """Idempotent insert: the same value again is fine, a different one conflicts."""
        with self.db.transaction() as connection:
            existing = connection.execute(
                "SELECT value FROM keygen WHERE federation = ? AND epoch = ? AND kind = ? AND "
                "sender = ? AND recipient = ?",
                (federation.id, federation.epoch, kind, sender, recipient),
            ).fetchone()
            if existing is not None:
                if existing["value"] != value:
                    raise ServiceError(409, f"a different {kind} from member {sender} is stored")
                return False
            connection.execute(
                "INSERT INTO keygen VALUES (?, ?, ?, ?, ?, ?)",
                (federation.id, federation.epoch, kind, sender, recipient, value),
            )
            return True

    def _require_phase(self, federation: Federation, *allowed: str) -> None:
        phase = self.phase(federation)
        if phase not in allowed:
            raise ServiceError(409, f"key generation is in phase {phase!r}, not {allowed[0]!r}")

    def add_commitment(self, federation: Federation, member: int, commitment: str) -> None:
        if self.phase(federation) != "commit":
            stored = self._values(federation, COMMITMENT).get((member, 0))
            if stored == commitment:
                return
            raise ServiceError(409, "commitments are closed for this key epoch")
        self._store(federation, COMMITMENT, member, 0, commitment)

    def add_public_key_share(self, federation: Federation, member: int, blob: bytes) -> None:
        self._require_phase(federation, "reveal", "deal", "ready")
        params = federation.params
        try:
            share = keygen.PublicKeyShare.from_bytes(blob, params)
        except HeAggError as exc:
            raise ServiceError(422, str(exc)) from exc
        if share.member != member:
            raise ServiceError(422, "the share names another member")
        commitment = bytes.fromhex(self._values(federation, COMMITMENT)[(member, 0)])
        try:
            keygen.verify_reveal(commitment, share, params, federation.id, federation.epoch)
        except CommitmentError as exc:
            raise ServiceError(409, str(exc)) from exc
        self._store(federation, PK_SHARE, member, 0, self.blobs.put(blob))
        self._maybe_publish_public_key(federation)

    def _maybe_publish_public_key(self, federation: Federation) -> None:
        stored = self._values(federation, PK_SHARE)
        if len(stored) < len(federation.member_indices) or federation.public_key is not None:
            return
        params = federation.params
        shares = [
            keygen.PublicKeyShare.from_bytes(self.blobs.read(stored[(m, 0)]), params)
            for m in federation.member_indices
        ]
        crs = common_reference_polynomial(params, federation.id)
        aggregate = keygen.aggregate_public_key_shares(shares, params)
        key = ciphertext_to_bytes(keygen.public_key(aggregate, crs, params))
        with self.db.transaction() as connection:
            connection.execute(
                "UPDATE federations SET public_key = ? WHERE id = ?",
                (self.blobs.put(key), federation.id),
            )

    def public_key_share(self, federation: Federation, member: int) -> bytes:
        digest = self._values(federation, PK_SHARE).get((member, 0))
        if digest is None:
            raise ServiceError(404, f"member {member} has not revealed its share")
        return self.blobs.read(digest)

    def add_shamir_share(
        self, federation: Federation, sender: int, recipient: int, blob: bytes
    ) -> None:
        self._require_phase(federation, "deal", "ready")
        if recipient not in federation.member_indices:
            raise ServiceError(404, f"no member {recipient}")
        try:
            message = EncryptedShare.from_bytes(blob)
        except (HeAggError, UnicodeDecodeError) as exc:
            raise ServiceError(422, f"not an encrypted share: {exc}") from exc
        if (message.federation, message.epoch, message.sender, message.recipient) != (
            federation.id,
            federation.epoch,
            sender,
            recipient,
        ):
            raise ServiceError(422, "the share's header does not match its address")
        try:
            verify_signature(
                federation.member_key(sender), message.signature, message.signed_part()
            )
        except ProtocolError as exc:
            raise ServiceError(422, "the share is not signed by its sender") from exc
        self._store(federation, SHAMIR, sender, recipient, self.blobs.put(blob))

    def shamir_share(self, federation: Federation, sender: int, recipient: int) -> bytes:
        digest = self._values(federation, SHAMIR).get((sender, recipient))
        if digest is None:
            raise ServiceError(404, "that share has not been dealt yet")
        return self.blobs.read(digest)

    def public_key(self, federation: Federation) -> bytes:
        if federation.public_key is None:
            raise ServiceError(409, "the collective public key is not ready yet")
        return self.blobs.read(federation.public_key)
