"""The participant SDK: a client of a federation, over signed HTTP (httpx)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.progress import Progress

from clients.upload import prepare_upload
from he_agg.api.transport import SignedClient
from he_agg.public import PublicContext
from he_agg.errors import ServiceError
from he_agg.packing import Manifest, flatten, unflatten, weighted_vector
from he_agg.params import ParameterSet
from he_agg.plain import encode_plain_upload
from he_agg.request_signing import HEADER_MANIFEST
from he_agg.seal_codec import ciphertext_from_bytes

__all__ = ["Participant", "read_model"]

_PROGRESS_BYTES = 8 * 1024 * 1024


class Participant:
    """One enrolled client: fetch the public context, submit updates, wait for the model."""

    def __init__(
        self,
        base_url: str,
        federation: str,
        name: str,
        signing_key: Ed25519PrivateKey,
        *,
        transport: httpx.BaseTransport | None = None,
        show_progress: bool = True,
    ) -> None:
        self.http = SignedClient(base_url, signing_key, transport=transport)
        self.federation = federation
        self.name = name
        self.show_progress = show_progress
        self._public: PublicContext | None = None
        self._config: dict[str, Any] | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Participant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base(self) -> str:
        return f"/v1/federations/{self.federation}"

    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = dict(self.http.request("GET", self.base).json()["config"])
        return self._config

    def fetch_public_context(self) -> PublicContext:
        """The parameter set and the collective public key (no secret ever reaches a client)."""
        if self._public is None:
            params = ParameterSet.from_dict(self.config()["parameters"])
            blob = self.http.request("GET", f"{self.base}/public-key").content
            self._public = PublicContext(params, ciphertext_from_bytes(blob))
        return self._public

    def round_status(self, round: int) -> dict[str, Any]:
        return dict(self.http.request("GET", f"{self.base}/rounds/{round}").json())

    def open_rounds(self) -> list[int]:
        rounds = self.http.request("GET", f"{self.base}/rounds?round_state=open").json()
        return [int(r["number"]) for r in rounds]

    def submit(
        self, update: Mapping[str, Any], num_samples: float, *, round: int
    ) -> dict[str, Any]:
        """Weight, encrypt (or, in a plaintext federation, just encode) and upload an update."""
        if self.config()["mode"] == "plaintext":
            vector, manifest = flatten(update)
            params = ParameterSet.from_dict(self.config()["parameters"])
            body = encode_plain_upload(weighted_vector(vector, num_samples, params))
        else:
            body, manifest = self._encrypt(update, num_samples, round)
        path = f"{self.base}/rounds/{round}/updates/{self.name}"
        if self.show_progress and len(body) >= _PROGRESS_BYTES:
            with Progress(transient=True) as bar:
                task = bar.add_task(f"upload round {round}", total=len(body))
                response = self.http.request(
                    "PUT",
                    path,
                    content=body,
                    manifest=manifest.to_header(),
                    progress=lambda n: bar.advance(task, n),
                )
        else:
            response = self.http.request("PUT", path, content=body, manifest=manifest.to_header())
        return dict(response.json())

    def _encrypt(
        self, update: Mapping[str, Any], num_samples: float, round: int
    ) -> tuple[bytes, Manifest]:
        public = self.fetch_public_context()
        vector_size = flatten(update)[1].size + 1
        blocks = -(-vector_size // public.params.slots)
        if self.show_progress and blocks >= 64:
            with Progress(transient=True) as bar:
                task = bar.add_task("encrypt", total=blocks)
                return prepare_upload(
                    update,
                    num_samples,
                    public,
                    federation=self.federation,
                    round=round,
                    client=self.name,
                    progress=lambda n: bar.advance(task, n),
                )
        return prepare_upload(
            update, num_samples, public, federation=self.federation, round=round, client=self.name
        )

    def wait_for_model(
        self, round: int, timeout: float = 600.0, poll: float = 0.5
    ) -> dict[str, Any]:
        """Block until the round's model is published; return it as a state_dict."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.round_status(round)
            if status["model_ready"]:
                break
            if status["state"] == "aborted":
                raise ServiceError(409, f"round {round} was aborted: {status['reason']}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"round {round} has no model after {timeout:.0f} s")
            time.sleep(poll)
        return read_model(self.http.request("GET", f"{self.base}/rounds/{round}/model"))


def read_model(response: httpx.Response) -> dict[str, Any]:
    """A published model response → its state_dict (or mapping of arrays)."""
    manifest = Manifest.from_header(response.headers[HEADER_MANIFEST])
    values = np.frombuffer(response.content, dtype="<f8").astype(np.float64)
    return unflatten(values, manifest)
