"""The administrator's calls: create a federation, change its roster or re-key it, open
and close rounds, read the model."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import TypeAdapter

from clients.participant import read_model
from he_agg.api import paths
from he_agg.api.models import (
    EpochOut,
    EpochRequest,
    FederationCreate,
    FederationOut,
    RoundOpen,
    RoundOut,
)
from he_agg.api.roster_check import roster_for
from he_agg.api.states import FederationMode
from he_agg.api.transport import SignedClient, Verify
from he_agg.errors import ProtocolError
from he_agg.roster import RosterClient, RosterMember, SignedRoster

__all__ = ["Admin"]

_EPOCHS = TypeAdapter(list[EpochOut])


class Admin:
    """Signed calls with an admin key; responses parsed with the server's own wire models."""

    def __init__(
        self,
        base_url: str,
        signing_key: Ed25519PrivateKey,
        *,
        transport: httpx.BaseTransport | None = None,
        verify: Verify = True,
    ) -> None:
        self.http = SignedClient(base_url, signing_key, transport=transport, verify=verify)
        self._signing_key = signing_key

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def signed_roster(self, spec: FederationCreate) -> SignedRoster:
        """The roster of ``spec`` (version 1, epoch 0), signed with this admin's key."""
        roster = roster_for(spec, self.http.public_key.hex())
        return SignedRoster.sign(roster, self._signing_key.sign)

    def create_federation(self, spec: FederationCreate) -> FederationOut:
        """Create it with its signed roster (made here unless ``spec`` carries one): give the
        roster file to every party out of band, with its fingerprint to compare."""
        if spec.roster is None and spec.mode == FederationMode.CKKS:
            spec = spec.model_copy(update={"roster": self.signed_roster(spec).to_json()})
        body = spec.model_dump(mode="json", exclude_none=True)
        response = self.http.request("POST", paths.federations(), json_body=body)
        return FederationOut.model_validate_json(response.content)

    def roster(self, federation: str) -> SignedRoster:
        """The roster as the server stores it (an admin exports its own copy out of band)."""
        response = self.http.request("GET", paths.roster(federation))
        return SignedRoster.from_json(response.content)

    def rosters(self, federation: str) -> list[SignedRoster]:
        """Every roster of the federation, oldest first."""
        response = self.http.request("GET", paths.rosters(federation))
        return [SignedRoster.from_json(text) for text in json.loads(response.content)]

    def epochs(self, federation: str) -> list[EpochOut]:
        response = self.http.request("GET", paths.epochs(federation))
        return _EPOCHS.validate_json(response.content)

    def rekey(self, federation: str) -> list[EpochOut]:
        """Start the next key epoch under the same roster (its DKG runs in the background)."""
        body = EpochRequest().model_dump(mode="json", exclude_none=True)
        response = self.http.request("POST", paths.epochs(federation), json_body=body)
        return _EPOCHS.validate_json(response.content)

    def change_roster(
        self,
        federation: str,
        *,
        add_members: Sequence[RosterMember] = (),
        remove_members: Sequence[str] = (),
        add_clients: Sequence[RosterClient] = (),
        remove_clients: Sequence[str] = (),
        threshold: int | None = None,
        k_min: int | None = None,
    ) -> SignedRoster:
        """Sign and submit the successor of the newest roster (version + 1, for the epoch
        after the newest): its committee runs a DKG for that epoch, and rounds opened once
        its key is ready use it. Hand the new roster file to new parties out of band;
        enrolled ones follow it themselves, checking this admin's signature."""
        newest = self.rosters(federation)[-1].roster
        if newest.admin_key != self.http.public_key.hex():
            raise ProtocolError("the newest roster is not signed by this admin key")
        unknown = set(remove_members) - {m.name for m in newest.members}
        unknown |= set(remove_clients) - {c.name for c in newest.clients}
        if unknown:
            raise ProtocolError(f"not in the newest roster: {sorted(unknown)}")
        members = [m for m in newest.members if m.name not in remove_members]
        clients = [c for c in newest.clients if c.name not in remove_clients]
        last_epoch = max(e.epoch for e in self.epochs(federation))
        successor = dataclasses.replace(
            newest,
            version=newest.version + 1,
            epoch=last_epoch + 1,
            threshold=newest.threshold if threshold is None else threshold,
            k_min=newest.k_min if k_min is None else k_min,
            members=tuple(sorted([*members, *add_members], key=lambda m: m.index)),
            clients=tuple([*clients, *add_clients]),
        )
        signed = SignedRoster.sign(successor, self._signing_key.sign)
        body = EpochRequest(roster=signed.to_json()).model_dump(mode="json")
        self.http.request("POST", paths.epochs(federation), json_body=body)
        return signed

    def federation(self, federation: str) -> FederationOut:
        response = self.http.request("GET", paths.federation(federation))
        return FederationOut.model_validate_json(response.content)

    def open_round(self, federation: str, deadline_seconds: float) -> RoundOut:
        body = RoundOpen(deadline_seconds=deadline_seconds).model_dump(mode="json")
        response = self.http.request("POST", paths.rounds(federation), json_body=body)
        return RoundOut.model_validate_json(response.content)

    def close_round(self, federation: str, round: int) -> RoundOut:
        response = self.http.request("POST", paths.close_round(federation, round))
        return RoundOut.model_validate_json(response.content)

    def round(self, federation: str, round: int) -> RoundOut:
        response = self.http.request("GET", paths.round(federation, round))
        return RoundOut.model_validate_json(response.content)

    def model(self, federation: str, round: int) -> dict[str, Any]:
        """The round's published model as a state_dict (or mapping of arrays)."""
        return read_model(self.http.request("GET", paths.model(federation, round)))
