"""The administrator's calls: create a federation, open and close rounds, read the model."""

from __future__ import annotations

from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.participant import read_model
from he_agg.api import paths
from he_agg.api.models import FederationCreate, FederationOut, RoundOpen, RoundOut
from he_agg.api.transport import SignedClient

__all__ = ["Admin"]


class Admin:
    """Signed calls with an admin key; responses parsed with the server's own wire models."""

    def __init__(
        self,
        base_url: str,
        signing_key: Ed25519PrivateKey,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = SignedClient(base_url, signing_key, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_federation(self, spec: FederationCreate) -> FederationOut:
        body = spec.model_dump(mode="json", exclude_none=True)
        response = self.http.request("POST", paths.federations(), json_body=body)
        return FederationOut.model_validate_json(response.content)

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
