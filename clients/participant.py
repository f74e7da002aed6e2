"""The participant SDK: a client of a federation, over signed HTTP (httpx).

A client trusts the server for nothing but delivery. It encrypts only under a key that
every member of its pinned roster signed and whose second polynomial it recomputed from
the CRS itself (:func:`he_agg.key_statement.verify_collective_key`), and only for a
federation whose served configuration says what that roster says. It follows the admin's
signed roster successors (never the server's word) and, after a roster change, encrypts
only under keys of epochs the newest roster governs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.progress import Progress

from clients.encrypt_pool import pool_for
from clients.spool import UploadSpool, default_spool_dir, update_digest
from clients.upload import prepare_upload
from he_agg.api import paths
from he_agg.api.models import (
    FederationCreate,
    FederationOut,
    KeyStatements,
    RoundOut,
    UploadReceipt,
)
from he_agg.api.roster_check import genesis_mismatch
from he_agg.api.states import FederationMode, RoundState
from he_agg.api.transport import SignedClient, Verify
from he_agg.api.watching import Watcher
from he_agg.errors import ProtocolError, ServiceError
from he_agg.key_statement import KeyStatement, verify_collective_key
from he_agg.packing import Manifest, flatten, unflatten, weighted_vector
from he_agg.params import DEFAULT, ParameterSet
from he_agg.plain import encode_plain_upload
from he_agg.public import PublicContext
from he_agg.request_signing import HEADER_MANIFEST
from he_agg.roster import Roster, SignedRoster, follow

__all__ = ["Participant", "read_model"]

_PROGRESS_BYTES = 8 * 1024 * 1024
# Statuses that refuse an upload for good (403 not this client's or epoch's, 404 no such
# round, 409 the round takes no uploads or holds another, 410 gone, 413 too large, 422 an
# invalid envelope). Not 401 (a clock or signature fault: the same bytes may pass once
# fixed), 408/429 or 5xx (transient).
_REFUSALS = frozenset({403, 404, 409, 410, 413, 422})
log = logging.getLogger("he_agg.client")


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
        verify: Verify = True,
        show_progress: bool = True,
        roster: SignedRoster | None = None,
        roster_file: Path | None = None,
        spool_dir: Path | None = None,
        encrypt_workers: int | None = None,
    ) -> None:
        """``roster``: the admin's roster this client pinned (out of band, fingerprint
        compared); required to encrypt, since the server's own word is worth nothing.
        Signed successors of it are followed (:meth:`follow_rosters`); ``roster_file``,
        if given, is rewritten with the newest one followed. ``spool_dir`` keeps uploads
        until acknowledged (default: $XDG_CACHE_HOME/he-agg/uploads). ``encrypt_workers``:
        processes that encrypt a large update (:func:`clients.encrypt_pool.pool_for`;
        default: every core; 1 encrypts in this process)."""
        if roster is not None:
            roster.verify()
        self.signed_roster = roster
        self.roster_file = roster_file
        self.http = SignedClient(base_url, signing_key, transport=transport, verify=verify)
        self.federation = federation
        self.name = name
        self.show_progress = show_progress
        self._public: dict[int, PublicContext] = {}
        self._warned = False
        self.spool = UploadSpool(spool_dir or default_spool_dir())
        self._federation: FederationOut | None = None
        self.encrypt_workers = encrypt_workers

    @property
    def roster(self) -> Roster | None:
        """The newest roster this client follows (pinned, or a signed successor of it)."""
        return None if self.signed_roster is None else self.signed_roster.roster

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
        """The served configuration, checked against the pinned roster when there is one:
        it must say what its own (creation) roster says, which the pinned admin signed for
        this federation, with the pinned roster's parameter set and mode."""
        config = self.federation_info().config
        if self.signed_roster is not None:
            problem = genesis_mismatch(config, self.signed_roster)
            if problem:
                raise ProtocolError(f"the server's federation configuration: {problem}")
        return config

    def follow_rosters(self) -> SignedRoster:
        """Follow the admin's signed roster chain from the pinned roster (each link checked,
        :func:`he_agg.roster.follow`); the newest becomes this client's roster."""
        if self.signed_roster is None:
            raise ProtocolError("no pinned roster to follow")
        served = json.loads(self.http.request("GET", paths.rosters(self.federation)).content)
        chain = [SignedRoster.from_json(text) for text in served]
        newest = follow(self.signed_roster, chain)
        if newest.to_json() != self.signed_roster.to_json():
            self.signed_roster = newest
            self._public.clear()
            if self.roster_file is not None:
                write_atomically(self.roster_file, newest.to_json().encode())
        return newest

    def parameters(self) -> ParameterSet:
        parameters = self.config().parameters
        return DEFAULT if parameters is None else ParameterSet.from_dict(parameters)

    def fetch_public_context(self, epoch: int | None = None) -> PublicContext:
        """The parameter set and the collective key of ``epoch`` (omitted: the current one),
        verified: every member of the newest roster this client follows signed it, for that
        epoch. A key of an epoch that roster does not govern (an older committee's, after a
        roster change) is refused. No secret ever reaches a client."""
        self._require_roster()
        roster = self.follow_rosters().roster
        if epoch is None:
            epoch = self.current_epoch()
        if epoch not in self._public:
            if epoch < roster.epoch:
                raise ProtocolError(
                    f"key epoch {epoch} belongs to an older roster than version "
                    f"{roster.version} (first epoch {roster.epoch}), which this client follows: "
                    "it encrypts only under the current committee's keys"
                )
            blob = self.http.request("GET", paths.public_key(self.federation, epoch)).content
            response = self.http.request("GET", paths.key_statements(self.federation, epoch))
            served = KeyStatements.model_validate_json(response.content).statements
            statements = {index: KeyStatement.from_bytes(text) for index, text in served.items()}
            params = self.parameters()  # checked against the roster's fingerprint below
            self._public[epoch] = verify_collective_key(blob, statements, roster, params, epoch)
        return self._public[epoch]

    def _require_roster(self) -> SignedRoster:
        if self.signed_roster is None:
            raise ProtocolError(
                "no pinned roster: a client encrypts only under a key its roster's "
                "members signed (pass roster=, or --roster on the command line)"
            )
        return self.signed_roster

    def current_epoch(self) -> int:
        response = self.http.request("GET", paths.federation(self.federation))
        return FederationOut.model_validate_json(response.content).epoch

    def round_status(self, round: int) -> RoundOut:
        response = self.http.request("GET", paths.round(self.federation, round))
        return RoundOut.model_validate_json(response.content)

    def open_rounds(self) -> list[int]:
        return self._rounds(RoundState.OPEN)

    def published_rounds(self) -> list[int]:
        return self._rounds(RoundState.PUBLISHED)

    def _rounds(self, state: RoundState) -> list[int]:
        response = self.http.request("GET", paths.rounds(self.federation, state))
        return sorted(RoundOut.model_validate(r).number for r in response.json())

    def submit(self, update: Mapping[str, Any], num_samples: float, *, round: int) -> UploadReceipt:
        """Weight, encrypt (or, in a plaintext federation, just encode) and upload an update.

        The bytes are spooled (:mod:`clients.spool`) until the server acknowledges them: a
        second submit of the same update for the same round, after a lost acknowledgement
        or a crash, sends the identical bytes and gets the first receipt, not a 409. A
        definitive refusal (the round takes no uploads, another update is stored, the
        envelope or the client is refused) drops them too: they would never be taken, and
        a spool that kept them would grow by an upload per refused round."""
        digest = update_digest(update, num_samples)
        spooled = self.spool.load(self.federation, round, self.name, digest)
        if spooled is not None:
            body, manifest = spooled
        else:
            if self.config().mode == FederationMode.PLAINTEXT:
                vector, manifest = flatten(update)
                body = encode_plain_upload(weighted_vector(vector, num_samples, self.parameters()))
            else:
                body, manifest = self._encrypt(update, num_samples, round)
            self.spool.keep(self.federation, round, self.name, digest, body, manifest)
        try:
            receipt = self.upload(round, body, manifest)
        except ServiceError as exc:
            if exc.status in _REFUSALS:  # these bytes will never be taken: do not keep them
                self.spool.drop(self.federation, round, self.name)
            raise
        self.spool.drop(self.federation, round, self.name)
        return receipt

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
        self._require_roster()  # refused before anything is asked of the server
        epoch = self.round_status(round).epoch  # the round's key epoch, checked below
        public = self.fetch_public_context(epoch)
        if not public.params.proofs and not self._warned:
            self._warned = True
            log.warning(
                "this federation's parameter set has no proofs of well-formed uploads: "
                "its privacy holds only if every client is honest (SECURITY.md)"
            )
        roster_digest = self._require_roster().roster.digest  # governs that epoch (checked)
        vector_size = flatten(update)[1].size + 1
        blocks = -(-vector_size // public.params.slots)

        def encrypt(progress: Callable[[int], None] | None) -> tuple[bytes, Manifest]:
            return prepare_upload(
                update,
                num_samples,
                public,
                federation=self.federation,
                round=round,
                client=self.name,
                epoch=epoch,
                roster_digest=roster_digest,
                progress=progress,
                pool=pool_for(public, blocks, self.encrypt_workers),
            )

        if self.show_progress and blocks >= 64:
            with Progress(transient=True) as bar:
                task = bar.add_task("encrypt", total=blocks)
                return encrypt(lambda n: bar.advance(task, n))
        return encrypt(None)

    def wait_for_model(
        self, round: int, timeout: float = 600.0, poll: float = 0.5
    ) -> dict[str, Any]:
        """Block until the round's model is published; return it as a state_dict. Waits by
        long poll (he_agg.api.watching); ``poll`` is the interval against a server without
        it."""
        deadline = time.monotonic() + timeout
        watcher = Watcher(self.http, self.federation, poll)
        while True:
            status = self.round_status(round)
            if status.model_ready:
                break
            if status.state == RoundState.ABORTED:
                raise ServiceError(409, f"round {round} was aborted: {status.reason}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"round {round} has no model after {timeout:.0f} s")
            watcher.wait(left)  # a long poll: back as soon as the round moves
        return self.fetch_model(round)

    def fetch_model(self, round: int) -> dict[str, Any]:
        """The round's published model as a state_dict, for any enrolled client or member
        (whether or not it uploaded); ServiceError 409 if the round has none yet."""
        return read_model(self.http.request("GET", paths.model(self.federation, round)))


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole (a crash leaves the old file or the new one)."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_model(response: httpx.Response) -> dict[str, Any]:
    """A published model response → its state_dict (or mapping of arrays)."""
    manifest = Manifest.from_header(response.headers[HEADER_MANIFEST])
    values = np.frombuffer(response.content, dtype="<f8").astype(np.float64)
    return unflatten(values, manifest)
