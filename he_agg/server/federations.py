"""Federations and their enrolled parties: created by an admin, read by everyone else."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache

from pydantic import ValidationError

from he_agg.api.models import EpochRequest, FederationCreate, FederationOut
from he_agg.api.roster_check import roster_mismatch
from he_agg.api.states import FederationMode, KeygenPhase, PartyRole
from he_agg.errors import HeAggError, ParameterError, ServiceError, StoreConflict
from he_agg.params import DEFAULT, ParameterSet
from he_agg.roster import Roster, SignedRoster
from he_agg.server.store import (
    BlobStore,
    EpochRow,
    FederationRow,
    PartyRow,
    RoundRow,
    Store,
)

__all__ = ["Epoch", "Federation", "Federations", "round_row"]

log = logging.getLogger("he_agg.federations")


@dataclass(frozen=True)
class Epoch:
    """One key epoch of a federation: its row and the roster that governs it.

    Who may take part in a round (clients, the committee, t, K_min) is read from the
    epoch's roster, never from the federation's creation body, because roster changes
    start new epochs. A plaintext federation without a roster falls back to the body."""

    row: EpochRow
    spec: FederationCreate

    @property
    def number(self) -> int:
        return self.row.epoch

    @cached_property
    def roster(self) -> Roster | None:
        return SignedRoster.from_json(self.row.roster).roster if self.row.roster else None

    @property
    def threshold(self) -> int:
        return self.spec.threshold if self.roster is None else self.roster.threshold

    @property
    def k_min(self) -> int:
        return self.spec.k_min if self.roster is None else self.roster.k_min

    @cached_property
    def members(self) -> dict[int, bytes]:
        """Member index → Ed25519 key."""
        listed = self.spec.members if self.roster is None else self.roster.members
        return {m.index: bytes.fromhex(m.signing_key) for m in listed}

    @property
    def member_indices(self) -> list[int]:
        return sorted(self.members)

    @cached_property
    def client_names(self) -> list[str]:
        listed = self.spec.clients if self.roster is None else self.roster.clients
        return [c.name for c in listed]

    def member_key(self, index: int) -> bytes:
        key = self.members.get(index)
        if key is None:
            raise ServiceError(404, f"no member {index} in key epoch {self.number}")
        return key

    @property
    def roster_digest(self) -> bytes:
        if self.roster is None:
            raise ServiceError(409, f"key epoch {self.number} has no roster")
        return self.roster.digest


@lru_cache(maxsize=256)
def _parameter_set(canonical: str) -> ParameterSet:
    """A stored parameter set, validated once per process: a Federation is rebuilt from its
    row for every request and every tick, and validation (primality of every prime, the
    security and flooding rules) costs about a millisecond a time, which added up to 2 %
    of the server's busy samples under load. The set is frozen, so one instance serves
    every request."""
    return ParameterSet.from_dict(json.loads(canonical))


@dataclass(frozen=True)
class Federation:
    """A federation as the server sees it: its row, its key epochs and its configuration.

    ``row.epoch`` is the current epoch, the one new rounds open under; the newest epoch
    may be later (its DKG still running)."""

    row: FederationRow
    epoch_rows: tuple[EpochRow, ...]

    @property
    def id(self) -> str:
        return self.row.id

    @cached_property
    def spec(self) -> FederationCreate:
        return FederationCreate.model_validate(self.row.config)

    @cached_property
    def params(self) -> ParameterSet:
        return _parameter_set(json.dumps(self.row.config["parameters"], sort_keys=True))

    @property
    def mode(self) -> FederationMode:
        return self.spec.mode

    @property
    def epoch(self) -> int:
        """The current key epoch."""
        return self.row.epoch

    def at(self, epoch: int) -> Epoch:
        for row in self.epoch_rows:
            if row.epoch == epoch:
                return Epoch(row, self.spec)
        raise ServiceError(404, f"no key epoch {epoch} in federation {self.id!r}")

    @property
    def current(self) -> Epoch:
        return self.at(self.row.epoch)

    @property
    def newest(self) -> Epoch:
        """The latest epoch: the one whose DKG runs (or ran last)."""
        return Epoch(self.epoch_rows[-1], self.spec)

    @property
    def rekey_below(self) -> int:
        tau = self.params.tau
        chosen = self.spec.rekey_below
        return -(-tau // 4) if chosen is None else chosen


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


def _roster_body(federation: Federation, roster: Roster) -> FederationCreate:
    """The creation body the new roster describes, validated as one (names, unique keys,
    t ≤ n, K_min ≤ clients), so a roster change meets the rules a new federation meets."""
    spec = federation.spec.model_dump(mode="json")
    spec.update(
        threshold=roster.threshold,
        k_min=roster.k_min,
        clients=[asdict(c) for c in roster.clients],
        members=[asdict(m) for m in roster.members],
        roster=None,
    )
    try:
        return FederationCreate.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        raise ServiceError(422, f"roster: {problems}") from exc


class Federations:
    def __init__(self, store: Store, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs

    def create(self, body: FederationCreate, admin_key: str) -> Federation:
        try:
            params = DEFAULT if body.parameters is None else ParameterSet.from_dict(body.parameters)
        except ParameterError as exc:
            raise ServiceError(422, str(exc)) from exc
        _check_limits(body, params)
        if body.mode == FederationMode.CKKS or body.roster is not None:
            _check_roster(body, admin_key)
        config = body.model_dump(mode="json")
        config["parameters"] = params.to_dict()
        now = time.time()
        row = FederationRow(body.id, config, now)
        number = 0 if body.roster is None else SignedRoster.from_json(body.roster).roster.epoch
        first = EpochRow(body.id, number, body.roster or "", now)
        row = dataclasses.replace(row, epoch=number)
        try:
            self.store.insert_federation(row, _parties(body), first)
        except StoreConflict as exc:
            raise ServiceError(409, f"federation {body.id!r} already exists") from exc
        return self.get(body.id)

    def get(self, federation_id: str) -> Federation:
        row = self.store.federation(federation_id)
        if row is None:
            raise ServiceError(404, f"no federation {federation_id!r}")
        return Federation(row, tuple(self.store.epochs(federation_id)))

    def encrypted(self) -> list[Federation]:
        """The stored federations that encrypt (not plaintext baselines), without epochs."""
        federations = (Federation(row, ()) for row in self.store.federations())
        return [f for f in federations if f.mode == FederationMode.CKKS]

    def without_proofs(self) -> list[str]:
        """Encrypted federations whose parameter set does not require upload proofs."""
        return [federation.id for federation in self.encrypted() if not federation.params.proofs]

    def party(self, federation: Federation, key: str) -> PartyRow | None:
        return self.store.party_by_key(federation.id, key)

    def describe(self, federation: Federation, phase: KeygenPhase) -> FederationOut:
        current = federation.current.row
        return FederationOut(
            id=federation.id,
            config=federation.spec,
            epoch=federation.epoch,
            keygen_phase=phase,
            public_key_ready=current.public_key is not None,
            decryptions_used=current.decryptions_used,
        )

    def roster(self, federation: Federation) -> str:
        if federation.spec.roster is None:
            raise ServiceError(404, f"federation {federation.id!r} has no roster")
        return federation.spec.roster

    def rosters(self, federation: Federation) -> list[str]:
        """Every signed roster, oldest first (a re-key keeps its roster: listed once)."""
        chain: list[str] = []
        for row in federation.epoch_rows:
            if row.roster and row.roster not in chain:
                chain.append(row.roster)
        return chain

    def public_key(self, federation: Federation, epoch: int | None = None) -> bytes:
        chosen = federation.current if epoch is None else federation.at(epoch)
        if chosen.row.public_key is None:
            raise ServiceError(409, f"the collective key of epoch {chosen.number} is not ready yet")
        return self.blobs.read(chosen.row.public_key)

    # ---- key epochs --------------------------------------------------------------
    def request_epoch(
        self, federation: Federation, request: EpochRequest, admin_key: str, ready: bool
    ) -> Federation:
        """The admin's next epoch: a re-key (same roster; ``ready``: the newest epoch's key
        is done, else 409) or a roster change (a signed successor, for a later epoch; an
        epoch whose DKG has not finished is abandoned for it)."""
        newest = federation.newest
        if federation.mode != FederationMode.CKKS or newest.roster is None:
            raise ServiceError(409, "only an encrypted federation with a roster has key epochs")
        if request.roster is None:
            if not ready:
                raise ServiceError(
                    409, f"key epoch {newest.number}'s key generation is still running"
                )
            return self.start_epoch(federation, newest.row.roster, newest.number + 1)
        roster = self._successor(federation, request.roster, admin_key)
        if roster.epoch <= newest.number:
            raise ServiceError(
                422, f"roster: its first epoch {roster.epoch} is not after epoch {newest.number}"
            )
        return self.start_epoch(federation, request.roster, roster.epoch)

    def _successor(self, federation: Federation, text: str, admin_key: str) -> Roster:
        newest = federation.newest
        assert newest.roster is not None
        try:
            offered = SignedRoster.from_json(text)
            roster = offered.check_successor_of(SignedRoster.from_json(newest.row.roster))
        except HeAggError as exc:
            raise ServiceError(422, f"roster: {exc}") from exc
        if roster.admin_key != admin_key:
            raise ServiceError(422, "roster: it is signed by another admin key than the caller's")
        body = _roster_body(federation, roster)
        _check_limits(body, federation.params)
        problem = roster_mismatch(body, roster)
        if problem:
            raise ServiceError(422, f"roster: {problem}")
        return roster

    def start_epoch(self, federation: Federation, roster: str, number: int) -> Federation:
        """Insert epoch ``number`` under ``roster`` (enrolling its new parties); a pending
        epoch it supersedes is retired (abandoned)."""
        now = time.time()
        parties: list[PartyRow] = []
        if roster != federation.newest.row.roster:
            parties = _parties(_roster_body(federation, SignedRoster.from_json(roster).roster))
        with self.store.transaction():
            newest = self.get(federation.id).newest
            if newest.number >= number:
                raise ServiceError(409, f"key epoch {number} exists already")
            if newest.number != federation.epoch:
                self.store.retire_epoch(federation.id, newest.number, now)
            try:
                self.store.insert_epoch(EpochRow(federation.id, number, roster, now), parties)
            except StoreConflict as exc:
                raise ServiceError(
                    409, "roster: a party is enrolled already with other keys"
                ) from exc
        log.info("key epoch started", extra={"federation": federation.id, "epoch": number})
        return self.get(federation.id)


def _check_limits(body: FederationCreate, params: ParameterSet) -> None:
    if len(body.members) > params.committee_max:
        raise ServiceError(
            422,
            f"{len(body.members)} members; the parameter set's noise "
            f"budget allows {params.committee_max}",
        )
    if body.k_min > params.k_max:
        raise ServiceError(422, f"k_min exceeds the parameter set's K_max = {params.k_max}")
