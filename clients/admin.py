"""The administrator's calls: create a federation, open and close rounds."""

from __future__ import annotations

from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from he_agg.api.transport import SignedClient

__all__ = ["Admin"]


class Admin:
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

    def create_federation(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self.http.request("POST", "/v1/federations", json_body=spec).json())

    def federation(self, federation: str) -> dict[str, Any]:
        return dict(self.http.request("GET", f"/v1/federations/{federation}").json())

    def open_round(self, federation: str, deadline_seconds: float) -> dict[str, Any]:
        return dict(
            self.http.request(
                "POST",
                f"/v1/federations/{federation}/rounds",
                json_body={"deadline_seconds": deadline_seconds},
            ).json()
        )

    def close_round(self, federation: str, round: int) -> dict[str, Any]:
        return dict(
            self.http.request("POST", f"/v1/federations/{federation}/rounds/{round}/close").json()
        )

    def model(self, federation: str, round: int) -> dict[str, Any]:
        from clients.participant import read_model

        return read_model(
            self.http.request("GET", f"/v1/federations/{federation}/rounds/{round}/model")
        )

    def round(self, federation: str, round: int) -> dict[str, Any]:
        return dict(self.http.request("GET", f"/v1/federations/{federation}/rounds/{round}").json())
