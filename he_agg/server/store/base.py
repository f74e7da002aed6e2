"""The storage seam: what the server keeps, as typed rows, behind two protocols.

:class:`Store` holds the metadata (federations, enrolments, key epochs with their rosters,
collective keys and decryption budgets τ, key generation messages, rounds, uploads,
members' endorsements of upload sets, decryption shares and nonces);
:class:`BlobStore` holds the bytes (uploads, aggregates, shares, models), content-addressed.

Implementations: :mod:`he_agg.server.store.sql` (SQLAlchemy Core; SQLite is the embedded
default, PostgreSQL for replicas) and :mod:`he_agg.server.store.blobs` (fsynced files).

Concurrency contract. Every method is atomic on its own. ``transaction()`` groups calls:
inside it, every call made by the same thread runs in one database transaction that is
serialised against every other writer (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a
transaction-level advisory lock), and commits at the end of the block or rolls back
if it raises. Transactions nest (the inner block joins the outer one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from he_agg.api.states import PartyRole, RoundState

__all__ = [
    "BlobStore",
    "EpochRow",
    "FederationRow",
    "PartyRow",
    "RoundRow",
    "ShareRow",
    "Store",
    "UploadRow",
]


@dataclass(frozen=True)
class FederationRow:
    id: str
    config: dict[str, Any]  # FederationCreate.model_dump(), with the full parameter set
    created: float
    epoch: int = 0  # the current key epoch: the one new rounds open under


@dataclass(frozen=True)
class EpochRow:
    """One key epoch of a federation: its own roster, collective key and budget τ."""

    federation: str
    epoch: int
    roster: str  # the admin-signed roster JSON, exactly as signed; '' without one
    created: float
    public_key: str | None = None  # blob digest of the epoch's collective key, once published
    decryptions_used: int = 0  # decryption sets named in this epoch, counted against τ
    retired: float | None = None  # when it was retired (secrets may go) or abandoned


@dataclass(frozen=True)
class PartyRow:
    federation: str
    name: str
    role: PartyRole
    signing_key: str  # hex Ed25519
    encryption_key: str | None = None  # hex X25519, members only
    member_index: int | None = None  # members only


@dataclass(frozen=True)
class RoundRow:
    federation: str
    number: int
    state: RoundState
    deadline: float
    opened: float
    closed: float | None = None
    reason: str | None = None  # why it was aborted
    manifest: str | None = None  # the first upload's manifest JSON; later ones must match
    aggregate: str | None = None  # blob digest of the aggregate envelope
    attempt: int = 0  # decryption attempt number; a new set is a new attempt
    decryption_set: tuple[int, ...] = ()
    attempt_started: float | None = None
    unresponsive: tuple[int, ...] = ()  # members that let an earlier attempt time out
    model: str | None = None  # blob digest of the published float64 model
    epoch: int = 0  # the key epoch it opened under, fixed for its life


@dataclass(frozen=True)
class UploadRow:
    federation: str
    round: int
    client: str
    sha256: str  # blob digest
    size: int
    signature: str  # the client's request signature, hex, as sent
    timestamp: int
    nonce: str
    target: str  # the signed request target, exactly as signed
    manifest: str  # the manifest header exactly as signed
    received: float


@dataclass(frozen=True)
class ShareRow:
    federation: str
    round: int
    attempt: int
    member: int
    sha256: str  # blob digest of the decryption share


class Store(Protocol):
    """The server's metadata. Raises :class:`~he_agg.errors.StoreConflict` on a duplicate
    key and :class:`~he_agg.errors.StoreError` for anything else the database refuses."""

    on_commit: list[Callable[[], None]]  # called after each write transaction commits

    def transaction(self) -> AbstractContextManager[None]:
        """One serialised, atomic transaction for every call in the block (this thread)."""
        ...

    def close(self) -> None: ...

    # ---- federations and enrolment ---------------------------------------------
    def insert_federation(
        self, row: FederationRow, parties: Sequence[PartyRow], epoch: EpochRow
    ) -> None:
        """The federation, its parties and its first epoch, together; StoreConflict if the
        id exists."""
        ...

    def federation(self, federation_id: str) -> FederationRow | None: ...

    def federations(self) -> list[FederationRow]:
        """Every federation, by id."""
        ...

    def set_current_epoch(self, federation_id: str, epoch: int) -> None:
        """Make ``epoch`` (already stored) the one new rounds open under."""
        ...

    def party_by_key(self, federation_id: str, signing_key: str) -> PartyRow | None: ...

    def parties(self, federation_id: str) -> list[PartyRow]:
        """Every party of the federation, in any epoch, ordered by name."""
        ...

    # ---- key epochs ----------------------------------------------------------------
    def insert_epoch(self, row: EpochRow, parties: Sequence[PartyRow]) -> None:
        """The epoch and each party not stored yet, together. StoreConflict, with nothing
        written, if the epoch exists or a party's name is stored with another role, key or
        index; a party stored exactly as given is skipped."""
        ...

    def epoch(self, federation_id: str, epoch: int) -> EpochRow | None: ...

    def epochs(self, federation_id: str) -> list[EpochRow]:
        """The federation's epochs, ordered by number."""
        ...

    def unsettled_epochs(self) -> list[EpochRow]:
        """Epochs of any federation that are neither retired nor current: a newer epoch
        whose DKG runs, or an older one with rounds left (what the clock tick settles)."""
        ...

    def set_public_key(self, federation_id: str, epoch: int, digest: str) -> None:
        """Record the blob digest of the epoch's published collective key."""
        ...

    def count_decryption(self, federation_id: str, epoch: int, delta: int = 1) -> None:
        """decryptions_used += delta in that epoch: +1 when a decryption set is named
        against τ, −1 when an attempt is replaced that released no share."""
        ...

    def retire_epoch(self, federation_id: str, epoch: int, at: float) -> None:
        """Mark the epoch retired at ``at``; once retired it keeps its first time."""
        ...

    # ---- key generation messages -----------------------------------------------
    def keygen_values(
        self, federation_id: str, epoch: int, kind: str
    ) -> dict[tuple[int, int], str]:
        """{(sender, recipient): value} of one kind (commitment, pk_share, shamir)."""
        ...

    def insert_keygen_value(
        self, federation_id: str, epoch: int, kind: str, sender: int, recipient: int, value: str
    ) -> None: ...

    # ---- rounds --------------------------------------------------------------
    def insert_round(
        self, federation_id: str, deadline: float, opened: float, epoch: int = 0
    ) -> RoundRow:
        """A new open round under ``epoch``, numbered one past the federation's last."""
        ...

    def round(self, federation_id: str, number: int) -> RoundRow | None: ...

    def rounds(
        self, federation_id: str | None = None, state: RoundState | None = None
    ) -> list[RoundRow]:
        """Rounds by (federation, number); None means any federation or any state."""
        ...

    def save_round(self, row: RoundRow) -> None:
        """Write every mutable field of an existing round (state, closed, reason, manifest,
        aggregate, attempt, decryption_set, attempt_started, unresponsive, model); its
        epoch is fixed when it is inserted."""
        ...

    # ---- uploads ---------------------------------------------------------------
    def insert_upload(self, row: UploadRow) -> None: ...

    def upload(self, federation_id: str, number: int, client: str) -> UploadRow | None: ...

    def uploads(self, federation_id: str, number: int) -> list[UploadRow]:
        """A round's uploads, ordered by client name."""
        ...

    def referenced_blobs(self) -> set[str]:
        """Every blob digest a row names (uploads, shares, aggregates, models, keys and key
        generation messages): what the collector must keep."""
        ...

    def blob_in_use(self, digest: str) -> bool:
        """Whether any row references this blob."""
        ...

    # ---- decryption shares -----------------------------------------------------
    def insert_share(self, row: ShareRow) -> None: ...

    def shares(self, federation_id: str, number: int, attempt: int) -> list[ShareRow]:
        """One attempt's shares, ordered by member."""
        ...

    # ---- endorsements of a round's upload set ------------------------------------
    def insert_endorsement(
        self, federation_id: str, number: int, member: int, upload_set: str, body: str
    ) -> None:
        """A member's endorsement (``upload_set``: the set digest, hex; ``body``: the
        :class:`~he_agg.endorsement.Endorsement` JSON); StoreConflict if this member
        already has one for this round."""
        ...

    def endorsements(self, federation_id: str, number: int) -> dict[int, tuple[str, str]]:
        """A round's endorsements: member → (upload_set hex, body)."""
        ...

    # ---- request nonces (replay protection) --------------------------------------
    def spend_nonce(self, key: str, nonce: str, seen: float) -> bool:
        """Record a nonce; False if this key used it before (a replay)."""
        ...

    def prune_nonces(self, before: float) -> int:
        """Forget nonces seen before ``before`` (older than the allowed clock skew)."""
        ...


class BlobStore(Protocol):
    """Content-addressed bytes (sha256 hex). ``commit_file``/``put`` return only once the
    blob is durable (file fsynced, renamed, directory fsynced)."""

    def path(self, digest: str) -> Path: ...

    def exists(self, digest: str) -> bool: ...

    def temporary(self) -> tuple[int, Path]:
        """An open file descriptor and path in the scratch area, for a body being received."""
        ...

    def commit_file(self, temporary: Path, digest: str) -> None: ...

    def put(self, data: bytes) -> str: ...

    def read(self, digest: str) -> bytes: ...

    def remove(self, digest: str) -> None: ...

    def discard(self, temporary: Path) -> None: ...

    def clean_scratch(self, older_than: float | None = None) -> int: ...

    def digests(self) -> Iterator[str]: ...

    def remove_if_stale(
        self, digest: str, older_than: float, unused: Callable[[], bool]
    ) -> bool: ...
