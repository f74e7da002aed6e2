"""The server's side of the DKG: it stores and relays, and checks only what is public.

Commitments H(p_i) first; once all n are in, the reveals p_i (each checked against its
commitment); once all are revealed, the collective key pk = (Σ p_i, a) is published;
then the encrypted, signed Shamir shares are relayed, n² of them; then every member signs a
key statement. Each key epoch runs this once, under the roster that governs it; messages
go to the federation's newest epoch, and every one of them names its epoch inside what
is signed, so a message meant for another epoch is refused. When the newest epoch's key
is ready it becomes current: rounds opened from then on use it (rounds already open
finish on theirs).
"""

from __future__ import annotations

import logging

from he_agg.api.models import EpochOut, KeygenStatus, KeyStatements
from he_agg.api.states import FederationMode, KeygenPhase
from he_agg.collective_key import (
    PublicKeyShare,
    aggregate_public_key_shares,
    commitment_message,
    public_key,
    verify_reveal,
)
from he_agg.crs import common_reference_polynomial
from he_agg.errors import CommitmentError, HeAggError, ProtocolError, ServiceError, StoreConflict
from he_agg.key_statement import KeyStatement, key_digest
from he_agg.request_signing import verify_signature
from he_agg.seal_codec import ciphertext_to_bytes
from he_agg.server.federations import Epoch, Federation, Federations
from he_agg.server.store import BlobStore, Store
from he_agg.share_message import EncryptedShare

__all__ = ["COMMITMENT", "PK_SHARE", "SHAMIR", "STATEMENT", "KeygenRelay"]

log = logging.getLogger("he_agg.keygen")

COMMITMENT, PK_SHARE, SHAMIR, STATEMENT = "commitment", "pk_share", "shamir", "statement"


class KeygenRelay:
    def __init__(self, store: Store, blobs: BlobStore, federations: Federations) -> None:
        self.store = store
        self.blobs = blobs
        self.federations = federations

    def _values(self, federation: Federation, kind: str, epoch: int) -> dict[tuple[int, int], str]:
        return self.store.keygen_values(federation.id, epoch, kind)

    def phase(self, federation: Federation, epoch: int | None = None) -> KeygenPhase:
        """Where the DKG of ``epoch`` stands (omitted: the current epoch)."""
        if federation.mode == FederationMode.PLAINTEXT:
            return KeygenPhase.READY
        chosen = federation.current if epoch is None else federation.at(epoch)
        n = len(chosen.member_indices)
        if len(self._values(federation, COMMITMENT, chosen.number)) < n:
            return KeygenPhase.COMMIT
        if len(self._values(federation, PK_SHARE, chosen.number)) < n:
            return KeygenPhase.REVEAL
        if len(self._values(federation, SHAMIR, chosen.number)) < n * n:
            return KeygenPhase.DEAL
        if len(self._values(federation, STATEMENT, chosen.number)) < n:
            return KeygenPhase.DEAL  # a key no member has vouched for is not ready
        return KeygenPhase.READY

    def status(self, federation: Federation, epoch: int | None = None) -> KeygenStatus:
        """The DKG of ``epoch``; omitted, the newest epoch's (the one members take part in)."""
        e = federation.newest.number if epoch is None else federation.at(epoch).number
        return KeygenStatus(
            epoch=e,
            phase=self.phase(federation, e),
            commitments={s: v for (s, _), v in self._values(federation, COMMITMENT, e).items()},
            public_key_shares=sorted(s for s, _ in self._values(federation, PK_SHARE, e)),
            shamir_shares=sorted(self._values(federation, SHAMIR, e)),
            key_statements=sorted(s for s, _ in self._values(federation, STATEMENT, e)),
        )

    def _running(self, federation: Federation) -> Epoch:
        """The epoch DKG messages go to: the newest, unless it was abandoned."""
        newest = federation.newest
        if newest.row.retired is not None:
            raise ServiceError(409, f"key epoch {newest.number} was abandoned")
        return newest

    def _store(
        self,
        federation: Federation,
        epoch: Epoch,
        kind: str,
        sender: int,
        recipient: int,
        value: str,
    ) -> None:
        """Idempotent insert: the same value again is fine, a different one conflicts."""
        with self.store.transaction():
            existing = self._values(federation, kind, epoch.number).get((sender, recipient))
            if existing is not None:
                if existing != value:
                    raise ServiceError(409, f"a different {kind} from member {sender} is stored")
                return
            try:
                self.store.insert_keygen_value(
                    federation.id, epoch.number, kind, sender, recipient, value
                )
            except StoreConflict as exc:  # pragma: no cover - serialised by the transaction
                raise ServiceError(409, f"a {kind} from member {sender} is stored") from exc

    def _require_phase(self, federation: Federation, *allowed: KeygenPhase) -> Epoch:
        epoch = self._running(federation)
        phase = self.phase(federation, epoch.number)
        if phase not in allowed:
            raise ServiceError(409, f"key generation is in phase {phase!r}, not {allowed[0]!r}")
        return epoch

    def add_commitment(
        self, federation: Federation, member: int, commitment: str, signature: str
    ) -> None:
        """H(p_i) with its member's signature (over the roster digest and the epoch)."""
        value = f"{commitment}:{signature}"
        epoch = self._running(federation)
        if self.phase(federation, epoch.number) != KeygenPhase.COMMIT:
            if self._values(federation, COMMITMENT, epoch.number).get((member, 0)) == value:
                return
            raise ServiceError(409, "commitments are closed for this key epoch")
        message = commitment_message(
            federation.id, epoch.number, member, epoch.roster_digest, bytes.fromhex(commitment)
        )
        try:
            verify_signature(epoch.member_key(member), bytes.fromhex(signature), message)
        except ProtocolError as exc:
            raise ServiceError(422, "the commitment is not signed by its member") from exc
        self._store(federation, epoch, COMMITMENT, member, 0, value)

    def add_public_key_share(self, federation: Federation, member: int, blob: bytes) -> None:
        epoch = self._require_phase(
            federation, KeygenPhase.REVEAL, KeygenPhase.DEAL, KeygenPhase.READY
        )
        params = federation.params
        try:
            share = PublicKeyShare.from_bytes(blob, params)
        except HeAggError as exc:
            raise ServiceError(422, str(exc)) from exc
        if share.member != member:
            raise ServiceError(422, "the share names another member")
        stored = self._values(federation, COMMITMENT, epoch.number).get((member, 0))
        if stored is None:
            raise ServiceError(404, f"member {member} has no commitment in epoch {epoch.number}")
        commitment = bytes.fromhex(stored.split(":")[0])
        try:
            verify_reveal(commitment, share, params, federation.id, epoch.number)
        except CommitmentError as exc:
            raise ServiceError(409, str(exc)) from exc
        self._store(federation, epoch, PK_SHARE, member, 0, self.blobs.put(blob))
        self._maybe_publish_public_key(federation, epoch)

    def _maybe_publish_public_key(self, federation: Federation, epoch: Epoch) -> None:
        stored = self._values(federation, PK_SHARE, epoch.number)
        fresh = self.federations.get(federation.id).at(epoch.number)
        if len(stored) < len(epoch.member_indices) or fresh.row.public_key is not None:
            return
        params = federation.params
        shares = [
            PublicKeyShare.from_bytes(self.blobs.read(stored[(m, 0)]), params)
            for m in epoch.member_indices
        ]
        crs = common_reference_polynomial(params, federation.id)
        aggregate = aggregate_public_key_shares(shares, params)
        key = ciphertext_to_bytes(public_key(aggregate, crs, params))
        self.store.set_public_key(federation.id, epoch.number, self.blobs.put(key))

    def public_key_share(
        self, federation: Federation, member: int, epoch: int | None = None
    ) -> bytes:
        e = federation.newest.number if epoch is None else federation.at(epoch).number
        digest = self._values(federation, PK_SHARE, e).get((member, 0))
        if digest is None:
            raise ServiceError(404, f"member {member} has not revealed its share")
        return self.blobs.read(digest)

    def add_shamir_share(
        self, federation: Federation, sender: int, recipient: int, blob: bytes
    ) -> None:
        epoch = self._require_phase(federation, KeygenPhase.DEAL, KeygenPhase.READY)
        if recipient not in epoch.member_indices:
            raise ServiceError(404, f"no member {recipient}")
        try:
            message = EncryptedShare.from_bytes(blob)
        except (HeAggError, UnicodeDecodeError) as exc:
            raise ServiceError(422, f"not an encrypted share: {exc}") from exc
        if (message.federation, message.epoch, message.sender, message.recipient) != (
            federation.id,
            epoch.number,
            sender,
            recipient,
        ):
            raise ServiceError(422, "the share's header does not match its address")
        try:
            verify_signature(epoch.member_key(sender), message.signature, message.signed_part())
        except ProtocolError as exc:
            raise ServiceError(422, "the share is not signed by its sender") from exc
        self._store(federation, epoch, SHAMIR, sender, recipient, self.blobs.put(blob))

    def add_statement(self, federation: Federation, member: int, blob: bytes) -> None:
        """Store a member's key statement after the checks anyone can make."""
        epoch = self._require_phase(federation, KeygenPhase.DEAL, KeygenPhase.READY)
        try:
            statement = KeyStatement.from_bytes(blob)
        except HeAggError as exc:
            raise ServiceError(422, str(exc)) from exc
        expected = (federation.id, epoch.number, member, epoch.roster_digest)
        got = (statement.federation, statement.epoch, statement.member, statement.roster_digest)
        if got != expected:
            raise ServiceError(
                422, "the statement names another federation, epoch, member or roster"
            )
        served = self.federations.public_key(self.federations.get(federation.id), epoch.number)
        if statement.public_key_digest != key_digest(served):
            raise ServiceError(422, "the statement is about another public key")
        try:
            verify_signature(epoch.member_key(member), statement.signature, statement.message())
        except ProtocolError as exc:
            raise ServiceError(422, "the statement is not signed by its member") from exc
        self._store(federation, epoch, STATEMENT, member, 0, statement.to_bytes().decode())
        self.switch_if_ready(self.federations.get(federation.id))

    def switch_if_ready(self, federation: Federation) -> None:
        """Make the newest epoch current once its key is ready (every member vouched)."""
        newest = federation.newest
        if newest.number <= federation.epoch or newest.row.retired is not None:
            return
        if self.phase(federation, newest.number) != KeygenPhase.READY:
            return
        with self.store.transaction():
            self.store.set_current_epoch(federation.id, newest.number)
        log.info(
            "key epoch switched",
            extra={"federation": federation.id, "from": federation.epoch, "to": newest.number},
        )

    def epochs(self, federation: Federation) -> list[EpochOut]:
        """Every key epoch, oldest first, with its phase and budget."""
        listed = []
        for row in federation.epoch_rows:
            epoch = federation.at(row.epoch)
            listed.append(
                EpochOut(
                    epoch=row.epoch,
                    roster_version=None if epoch.roster is None else epoch.roster.version,
                    phase=self.phase(federation, row.epoch),
                    public_key_ready=row.public_key is not None,
                    decryptions_used=row.decryptions_used,
                    tau=federation.params.tau,
                    current=row.epoch == federation.epoch,
                    retired=row.retired is not None,
                )
            )
        return listed

    def statements(self, federation: Federation, epoch: int | None = None) -> KeyStatements:
        chosen = federation.current if epoch is None else federation.at(epoch)
        values = self._values(federation, STATEMENT, chosen.number)
        return KeyStatements(epoch=chosen.number, statements={s: v for (s, _), v in values.items()})

    def shamir_share(
        self, federation: Federation, sender: int, recipient: int, epoch: int | None = None
    ) -> bytes:
        e = federation.newest.number if epoch is None else federation.at(epoch).number
        digest = self._values(federation, SHAMIR, e).get((sender, recipient))
        if digest is None:
            raise ServiceError(404, "that share has not been dealt yet")
        return self.blobs.read(digest)
