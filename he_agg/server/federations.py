"""Federations and their enrolled parties: created by an admin, read by everyone else."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

from he_agg.api.models import FederationCreate, FederationOut
from he_agg.api.roster_check import roster_mismatch
from he_agg.api.states import FederationMode, KeygenPhase, PartyRole
from he_agg.errors import HeAggError, ParameterError, ServiceError, StoreConflict
from he_agg.params import DEFAULT, ParameterSet
from he_agg.roster import SignedRoster
from he_agg.server.store import BlobStore, FederationRow, PartyRow, RoundRow, Store

__all__ = ["Federation", "Federations", "round_row"]


@dataclass(frozen=True)
class Federation:
    """A federation as the server sees it: its row plus the parsed configuration."""

    row: FederationRow

    @property
    def id(self) -> str:
        return self.row.id

    @cached_property
    def spec(self) -> FederationCreate:
        return FederationCreate.model_validate(self.row.config)

    @cached_property
    def params(self) -> ParameterSet:
        return ParameterSet.from_dict(self.row.config["parameters"])

    @property
    def mode(self) -> FederationMode:
        return self.spec.mode

    @property
    def epoch(self) -> int:
        return self.row.epoch

    @property
    def member_indices(self) -> list[int]:
        return sorted(m.index for m in self.spec.members)

    @property
    def client_names(self) -> list[str]:
        return [c.name for c in self.spec.clients]

    def member_key(self, index: int) -> bytes:
        for member in self.spec.members:
            if member.index == index:
                return bytes.fromhex(member.signing_key)
        raise ServiceError(404, f"no member {index}")


def round_row(store: Store, federation_id: str, number: int) -> RoundRow:
    """A round's row, or 404."""
    row = store.round(federation_id, number)
    if row is None:
        raise ServiceError(404, f"no round {number} in federation {federation_id!r}")
    return row


def _check_roster(body: FederationCreate, admin_key: str) -> None:
    """The signed roster the parties will pin must say what this body says."""
    if body.roster is None:
        raise ServiceError(
            422, "roster: a federation needs the admin-signed roster its parties pin"
        )
    try:
        roster = SignedRoster.from_json(body.roster).verify()
    except HeAggError as exc:
        raise ServiceError(422, f"roster: {exc}") from exc
    if roster.admin_key != admin_key:
        raise ServiceError(422, "roster: it is signed by another admin key than the caller's")
    problem = roster_mismatch(body, roster)
    if problem:
        raise ServiceError(422, f"roster: {problem}")


def _parties(body: FederationCreate) -> list[PartyRow]:
    clients = [PartyRow(body.id, c.name, PartyRole.CLIENT, c.signing_key) for c in body.clients]
    members = [
        PartyRow(body.id, m.name, PartyRole.MEMBER, m.signing_key, m.encryption_key, m.index)
        for m in body.members
    ]
    return clients + members


class Federations:
    def __init__(self, store: Store, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs

    def create(self, body: FederationCreate, admin_key: str) -> Federation:
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
        if body.mode == FederationMode.CKKS or body.roster is not None:
            _check_roster(body, admin_key)
        config = body.model_dump(mode="json")
        config["parameters"] = params.to_dict()
        row = FederationRow(body.id, config, time.time())
        try:
            self.store.insert_federation(row, _parties(body))
        except StoreConflict as exc:
            raise ServiceError(409, f"federation {body.id!r} already exists") from exc
        return self.get(body.id)

    def get(self, federation_id: str) -> Federation:
        row = self.store.federation(federation_id)
        if row is None:
            raise ServiceError(404, f"no federation {federation_id!r}")
        return Federation(row)

    def party(self, federation: Federation, key: str) -> PartyRow | None:
        return self.store.party_by_key(federation.id, key)

    def describe(self, federation: Federation, phase: KeygenPhase) -> FederationOut:
        return FederationOut(
            id=federation.id,
            config=federation.spec,
            epoch=federation.epoch,
            keygen_phase=phase,
            public_key_ready=federation.row.public_key is not None,
            decryptions_used=federation.row.decryptions_used,
        )

    def roster(self, federation: Federation) -> str:
        if federation.spec.roster is None:
            raise ServiceError(404, f"federation {federation.id!r} has no roster")
        return federation.spec.roster

    def public_key(self, federation: Federation) -> bytes:
        if federation.row.public_key is None:
            raise ServiceError(409, "the collective public key is not ready yet")
        return self.blobs.read(federation.row.public_key)
