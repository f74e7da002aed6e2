"""The administrator's calls: create a federation, open and close rounds, read the model."""

from __future__ import annotations

from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.participant import read_model
from he_agg.api import paths
from he_agg.api.models import FederationCreate, FederationOut, RoundOpen, RoundOut
from he_agg.api.roster_check import roster_for
from he_agg.api.states import FederationMode
from he_agg.api.transport import SignedClient, Verify
from he_agg.roster import SignedRoster

__all__ = ["Admin"]


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
