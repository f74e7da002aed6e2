"""Request and response bodies of the REST API, kept apart from storage rows.

The server validates with these, and the SDK and the member agent parse with the same
models, so a field renamed on one side fails loudly on the other.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from he_agg.api.states import FederationMode, KeygenPhase, RoundState

__all__ = [
    "Activity",
    "CommitmentIn",
    "DecryptionRequest",
    "EpochOut",
    "EpochRequest",
    "FederationCreate",
    "FederationOut",
    "KeyStatements",
    "KeygenStatus",
    "MemberIn",
    "PartyIn",
    "RoundOpen",
    "RoundOut",
    "UploadReceipt",
    "UploadRecord",
]

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
HEX32 = r"^[0-9a-f]{64}$"


class PartyIn(BaseModel):
    name: str = Field(pattern=NAME)
    signing_key: str = Field(pattern=HEX32, description="Ed25519 public key, hex")


class MemberIn(PartyIn):
    index: int = Field(ge=1, le=255)
    encryption_key: str = Field(pattern=HEX32, description="X25519 public key, hex")


class FederationCreate(BaseModel):
    id: str = Field(pattern=NAME)
    parameters: dict[str, Any] | None = Field(
        default=None, description="a ParameterSet's fields; omitted: the default set"
    )
    mode: FederationMode = FederationMode.CKKS
    threshold: int = Field(ge=1, le=255)
    k_min: int = Field(ge=1)
    clients: list[PartyIn] = Field(min_length=1, max_length=100_000)
    members: list[MemberIn] = Field(default_factory=list, max_length=255)
    max_parameters: int = Field(default=10_000_000, ge=1, le=200_000_000)
    share_timeout_seconds: float = Field(default=60.0, gt=0, le=86_400)
    roster: str | None = Field(
        default=None,
        max_length=50_000_000,
        description="the admin-signed roster (he_agg.roster.SignedRoster JSON) that every "
        "party pins; the server checks it matches this body",
    )
    rekey_below: int | None = Field(
        default=None,
        ge=0,
        description="start the next key epoch's DKG once the current epoch has this many "
        "decryptions of τ left, counting rounds still to be decrypted; omitted: ⌈τ/4⌉",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FederationCreate:
        names = [p.name for p in self.clients] + [m.name for m in self.members]
        keys = [p.signing_key for p in self.clients] + [m.signing_key for m in self.members]
        if len(set(names)) != len(names) or len(set(keys)) != len(keys):
            raise ValueError("party names and signing keys must be unique")
        if len({m.index for m in self.members}) != len(self.members):
            raise ValueError("member indices must be unique")
        if self.mode == FederationMode.CKKS and not self.threshold <= len(self.members):
            raise ValueError("threshold must be at most the number of members")
        if self.k_min > len(self.clients):
            raise ValueError("k_min cannot exceed the number of enrolled clients")
        return self


class FederationOut(BaseModel):
    id: str
    config: FederationCreate
    epoch: int
    keygen_phase: KeygenPhase
    public_key_ready: bool
    decryptions_used: int


class EpochOut(BaseModel):
    """One key epoch: its roster, key generation and budget, and where it stands."""

    epoch: int
    roster_version: int | None = Field(description="the governing roster's version")
    phase: KeygenPhase
    public_key_ready: bool
    decryptions_used: int
    tau: int
    current: bool = Field(description="new rounds open under this epoch")
    retired: bool = Field(
        description="no round of this epoch is left to decrypt (or its DKG was abandoned): "
        "members destroy its secret shares"
    )


class EpochRequest(BaseModel):
    """An admin's request for the next key epoch: a re-key under the same roster, or a
    roster change (a signed successor of the newest roster, for a later epoch)."""

    roster: str | None = Field(
        default=None,
        max_length=50_000_000,
        description="he_agg.roster.SignedRoster JSON; omitted: re-key, same roster",
    )


class KeygenStatus(BaseModel):
    epoch: int
    phase: KeygenPhase
    commitments: dict[int, str] = Field(description="member → 'commitment:signature', hex")
    public_key_shares: list[int]
    shamir_shares: list[tuple[int, int]]
    key_statements: list[int] = Field(default_factory=list, description="members who signed pk")


class KeyStatements(BaseModel):
    """Members' signed statements about the collective key, by member index."""

    epoch: int
    statements: dict[int, str] = Field(description="he_agg.key_statement.KeyStatement JSON")


class CommitmentIn(BaseModel):
    commitment: str = Field(pattern=HEX32)
    signature: str = Field(
        pattern=r"^[0-9a-f]{128}$",
        description="the member's Ed25519 signature over he_agg.collective_key."
        "commitment_message (federation, epoch, member, roster digest, commitment)",
    )


class RoundOpen(BaseModel):
    deadline_seconds: float = Field(gt=0, le=7 * 86_400)


class RoundOut(BaseModel):
    federation: str
    number: int
    state: RoundState
    deadline: float
    uploads: list[str]
    reason: str | None
    attempt: int
    decryption_set: list[int]
    model_ready: bool
    epoch: int = Field(default=0, ge=0, description="the key epoch the round's uploads use")


class UploadReceipt(BaseModel):
    federation: str
    round: int
    client: str
    sha256: str
    size: int


class UploadRecord(BaseModel):
    client: str
    sha256: str
    size: int
    signature: str
    timestamp: int
    nonce: str
    target: str
    manifest: str


class DecryptionRequest(BaseModel):
    round: int
    epoch: int = Field(default=0, ge=0, description="the key epoch the round's uploads use")
    state: RoundState
    attempt: int
    decryption_set: list[int]
    aggregate_sha256: str
    uploads: list[UploadRecord]
    endorsements: dict[int, str] = Field(
        default_factory=dict,
        description="member index → he_agg.endorsement.Endorsement JSON: the members who "
        "endorsed this round's upload set; a member decrypts only with a quorum of them",
    )


class Activity(BaseModel):
    """A federation's activity tag (he_agg.server.watch): it changes when anything a party
    acts on does. Pass it back as ``since`` to wait for the next change."""

    tag: str
