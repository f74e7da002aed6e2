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
from he_agg.api import paths
from he_agg.api.models import FederationCreate, FederationOut, RoundOut, UploadReceipt
from he_agg.api.states import FederationMode, RoundState
from he_agg.api.transport import SignedClient
from he_agg.errors import ServiceError
from he_agg.packing import Manifest, flatten, unflatten, weighted_vector
from he_agg.params import DEFAULT, ParameterSet
from he_agg.plain import encode_plain_upload
from he_agg.public import PublicContext
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
        self._federation: FederationOut | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Participant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def federation_info(self) -> FederationOut:
        """The federation as the server describes it (fetched once; its config never changes)."""
        if self._federation is None:
            response = self.http.request("GET", paths.federation(self.federation))
            self._federation = FederationOut.model_validate_json(response.content)
        return self._federation

    def config(self) -> FederationCreate:
        return self.federation_info().config

    def parameters(self) -> ParameterSet:
        parameters = self.config().parameters
        return DEFAULT if parameters is None else ParameterSet.from_dict(parameters)

    def fetch_public_context(self) -> PublicContext:
        """The parameter set and the collective public key (no secret ever reaches a client)."""
        if self._public is None:
            blob = self.http.request("GET", paths.public_key(self.federation)).content
            self._public = PublicContext(self.parameters(), ciphertext_from_bytes(blob))
        return self._public

    def round_status(self, round: int) -> RoundOut:
        response = self.http.request("GET", paths.round(self.federation, round))
        return RoundOut.model_validate_json(response.content)

    def open_rounds(self) -> list[int]:
        response = self.http.request("GET", paths.rounds(self.federation, RoundState.OPEN))
        return [RoundOut.model_validate(r).number for r in response.json()]

    def submit(self, update: Mapping[str, Any], num_samples: float, *, round: int) -> UploadReceipt:
        """Weight, encrypt (or, in a plaintext federation, just encode) and upload an update."""
        if self.config().mode == FederationMode.PLAINTEXT:
            vector, manifest = flatten(update)
            body = encode_plain_upload(weighted_vector(vector, num_samples, self.parameters()))
        else:
            body, manifest = self._encrypt(update, num_samples, round)
        return self.upload(round, body, manifest)

    def upload(self, round: int, body: bytes, manifest: Manifest) -> UploadReceipt:
        """PUT prepared envelope bytes (see :func:`clients.upload.prepare_upload`)."""
        path = paths.update(self.federation, round, self.name)
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
        return UploadReceipt.model_validate_json(response.content)

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
            if status.model_ready:
                break
            if status.state == RoundState.ABORTED:
                raise ServiceError(409, f"round {round} was aborted: {status.reason}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"round {round} has no model after {timeout:.0f} s")
            time.sleep(poll)
        return read_model(self.http.request("GET", paths.model(self.federation, round)))


def read_model(response: httpx.Response) -> dict[str, Any]:
    """A published model response → its state_dict (or mapping of arrays)."""
    manifest = Manifest.from_header(response.headers[HEADER_MANIFEST])
    values = np.frombuffer(response.content, dtype="<f8").astype(np.float64)
    return unflatten(values, manifest)
