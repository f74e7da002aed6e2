"""The server's side of the DKG: it stores and relays, and checks only what is public.

Commitments H(p_i) first; once all n are in, the reveals p_i (each checked against its
commitment); once all are revealed, the collective key pk = (Σ p_i, a) is published;
then the encrypted, signed Shamir shares are relayed, n² of them.
"""

from __future__ import annotations

from he_agg.api.models import KeygenStatus, KeyStatements
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
from he_agg.roster import SignedRoster
from he_agg.seal_codec import ciphertext_to_bytes
from he_agg.server.federations import Federation, Federations
from he_agg.server.store import BlobStore, Store
from he_agg.share_message import EncryptedShare

__all__ = ["COMMITMENT", "PK_SHARE", "SHAMIR", "STATEMENT", "KeygenRelay"]

COMMITMENT, PK_SHARE, SHAMIR, STATEMENT = "commitment", "pk_share", "shamir", "statement"


class KeygenRelay:
    def __init__(self, store: Store, blobs: BlobStore, federations: Federations) -> None:
        self.store = store
        self.blobs = blobs
        self.federations = federations

    def _values(self, federation: Federation, kind: str) -> dict[tuple[int, int], str]:
        return self.store.keygen_values(federation.id, federation.epoch, kind)

    def phase(self, federation: Federation) -> KeygenPhase:
        if federation.mode == FederationMode.PLAINTEXT:
            return KeygenPhase.READY
        n = len(federation.member_indices)
        if len(self._values(federation, COMMITMENT)) < n:
            return KeygenPhase.COMMIT
        if len(self._values(federation, PK_SHARE)) < n:
            return KeygenPhase.REVEAL
        if len(self._values(federation, SHAMIR)) < n * n:
            return KeygenPhase.DEAL
        if len(self._values(federation, STATEMENT)) < n:
            return KeygenPhase.DEAL  # a key no member has vouched for is not ready
        return KeygenPhase.READY

    def status(self, federation: Federation) -> KeygenStatus:
        return KeygenStatus(
            epoch=federation.epoch,
            phase=self.phase(federation),
            commitments={s: v for (s, _), v in self._values(federation, COMMITMENT).items()},
            public_key_shares=sorted(s for s, _ in self._values(federation, PK_SHARE)),
            shamir_shares=sorted(self._values(federation, SHAMIR)),
            key_statements=sorted(s for s, _ in self._values(federation, STATEMENT)),
        )

    def _store(
        self, federation: Federation, kind: str, sender: int, recipient: int, value: str
    ) -> None:
        """Idempotent insert: the same value again is fine, a different one conflicts."""
        with self.store.transaction():
            existing = self._values(federation, kind).get((sender, recipient))
            if existing is not None:
                if existing != value:
                    raise ServiceError(409, f"a different {kind} from member {sender} is stored")
                return
            try:
                self.store.insert_keygen_value(
                    federation.id, federation.epoch, kind, sender, recipient, value
                )
            except StoreConflict as exc:  # pragma: no cover - serialised by the transaction
                raise ServiceError(409, f"a {kind} from member {sender} is stored") from exc

    def _require_phase(self, federation: Federation, *allowed: KeygenPhase) -> None:
        phase = self.phase(federation)
        if phase not in allowed:
            raise ServiceError(409, f"key generation is in phase {phase!r}, not {allowed[0]!r}")

    def add_commitment(
        self, federation: Federation, member: int, commitment: str, signature: str
    ) -> None:
        """H(p_i) with its member's signature (over the roster digest and the epoch)."""
        value = f"{commitment}:{signature}"
        if self.phase(federation) != KeygenPhase.COMMIT:
            if self._values(federation, COMMITMENT).get((member, 0)) == value:
                return
            raise ServiceError(409, "commitments are closed for this key epoch")
        roster = SignedRoster.from_json(federation.spec.roster or "").roster
        message = commitment_message(
            federation.id, federation.epoch, member, roster.digest, bytes.fromhex(commitment)
        )
        try:
            verify_signature(federation.member_key(member), bytes.fromhex(signature), message)
        except ProtocolError as exc:
            raise ServiceError(422, "the commitment is not signed by its member") from exc
        self._store(federation, COMMITMENT, member, 0, value)

    def add_public_key_share(self, federation: Federation, member: int, blob: bytes) -> None:
        self._require_phase(federation, KeygenPhase.REVEAL, KeygenPhase.DEAL, KeygenPhase.READY)
        params = federation.params
        try:
            share = PublicKeyShare.from_bytes(blob, params)
        except HeAggError as exc:
            raise ServiceError(422, str(exc)) from exc
        if share.member != member:
            raise ServiceError(422, "the share names another member")
        stored = self._values(federation, COMMITMENT)[(member, 0)]
        commitment = bytes.fromhex(stored.split(":")[0])
        try:
            verify_reveal(commitment, share, params, federation.id, federation.epoch)
        except CommitmentError as exc:
            raise ServiceError(409, str(exc)) from exc
        self._store(federation, PK_SHARE, member, 0, self.blobs.put(blob))
        self._maybe_publish_public_key(federation)

    def _maybe_publish_public_key(self, federation: Federation) -> None:
        stored = self._values(federation, PK_SHARE)
        if len(stored) < len(federation.member_indices) or federation.row.public_key is not None:
            return
        params = federation.params
        shares = [
            PublicKeyShare.from_bytes(self.blobs.read(stored[(m, 0)]), params)
            for m in federation.member_indices
        ]
        crs = common_reference_polynomial(params, federation.id)
        aggregate = aggregate_public_key_shares(shares, params)
        key = ciphertext_to_bytes(public_key(aggregate, crs, params))
        self.store.set_public_key(federation.id, self.blobs.put(key))

    def public_key_share(self, federation: Federation, member: int) -> bytes:
        digest = self._values(federation, PK_SHARE).get((member, 0))
        if digest is None:
            raise ServiceError(404, f"member {member} has not revealed its share")
        return self.blobs.read(digest)

    def add_shamir_share(
        self, federation: Federation, sender: int, recipient: int, blob: bytes
    ) -> None:
        self._require_phase(federation, KeygenPhase.DEAL, KeygenPhase.READY)
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

    def add_statement(self, federation: Federation, member: int, blob: bytes) -> None:
        """Store a member's key statement after the checks anyone can make."""
        self._require_phase(federation, KeygenPhase.DEAL, KeygenPhase.READY)
        try:
            statement = KeyStatement.from_bytes(blob)
        except HeAggError as exc:
            raise ServiceError(422, str(exc)) from exc
        roster = SignedRoster.from_json(federation.spec.roster or "").roster
        expected = (federation.id, federation.epoch, member, roster.digest)
        got = (statement.federation, statement.epoch, statement.member, statement.roster_digest)
        if got != expected:
            raise ServiceError(
                422, "the statement names another federation, epoch, member or roster"
            )
        if statement.public_key_digest != key_digest(self.federations.public_key(federation)):
            raise ServiceError(422, "the statement is about another public key")
        try:
            verify_signature(
                federation.member_key(member), statement.signature, statement.message()
            )
        except ProtocolError as exc:
            raise ServiceError(422, "the statement is not signed by its member") from exc
        self._store(federation, STATEMENT, member, 0, statement.to_bytes().decode())

    def statements(self, federation: Federation) -> KeyStatements:
        values = self._values(federation, STATEMENT)
        return KeyStatements(
            epoch=federation.epoch, statements={s: v for (s, _), v in values.items()}
        )

    def shamir_share(self, federation: Federation, sender: int, recipient: int) -> bytes:
        digest = self._values(federation, SHAMIR).get((sender, recipient))
        if digest is None:
            raise ServiceError(404, "that share has not been dealt yet")
        return self.blobs.read(digest)
