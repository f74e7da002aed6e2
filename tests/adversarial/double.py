"""A test double of the aggregator that lies: it serves whatever a test sets up.

It speaks the real REST API (paths from ``he_agg.api.paths``, bodies from
``he_agg.api.models``) to real member agents and real participants through
``httpx.MockTransport``, and records every endorsement, decryption share and upload they
send. It may show each member its own view of a round (``views``), and it hands out, with
every decryption request, the endorsements it holds, choosing for each member the one
that names the listed upload set if it has one: the best a lying server can do.
The honest parts of a round (uploads signed by real clients, the true aggregate's
digest) are built by :class:`World`, so each attack differs from an honest round in
exactly the thing it tries. Member agents start on a state folder as the DKG leaves it
(``member.key`` and the key statement record); ``legacy=True`` leaves the record out,
as the DKG before endorsements did.

Unless a test says otherwise it serves what the real server serves for a federation in
its first key epoch: one roster (the admin's), epoch 0 current and not retired, its key
and statements for ``?epoch=0`` or no epoch, and 404 for any other epoch.
:func:`forged_successor` builds the roster successors a lying server may serve instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from pydantic import BaseModel

from clients.harness import federation_spec
from clients.upload import prepare_upload
from he_agg.aggregate import aggregate_envelope
from he_agg.api import paths
from he_agg.api.models import (
    DecryptionRequest,
    EpochOut,
    FederationCreate,
    FederationOut,
    KeygenStatus,
    KeyStatements,
    RoundOut,
    UploadReceipt,
    UploadRecord,
)
from he_agg.api.roster_check import roster_for
from he_agg.api.states import KeygenPhase, RoundState
from he_agg.api.transport import SignedClient
from he_agg.endorsement import Endorsement, upload_set_digest
from he_agg.envelope import decode_upload
from he_agg.key_statement import KeyStatement, key_digest
from he_agg.params import ParameterSet, derive_parameters
from he_agg.request_signing import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    canonical_request,
)
from he_agg.roster import Roster, RosterMember, SignedRoster
from he_agg.seal_codec import ciphertext_to_bytes
from keys.agent import MemberAgent
from keys.committee import CommitteeSetup, run_committee_setup
from keys.dkg import KEY_STATEMENT_FILE, MEMBER_KEY
from keys.identity import Identity

FED = "hostile"
CLIENTS = ("bank-1", "bank-2", "bank-3", "bank-4")
PASSPHRASE = "member passphrase"
BASE = "http://aggregator.hostile"


@dataclass
class World:
    """An honest federation's parties and data: 3 members (t = 2) unless told otherwise,
    4 clients, K_max = 3."""

    params: ParameterSet
    committee: CommitteeSetup
    admin: Identity
    clients: dict[str, Identity]
    config: FederationCreate
    roster: SignedRoster

    @classmethod
    def build(cls, members: int = 3, threshold: int = 2, proofs: bool = False) -> World:
        """``proofs``: uploads carry proofs of well-formed ciphertexts (N = 8192; slower)."""
        params = derive_parameters(
            "hostile-test", k_max=3, committee_max=members, value_bits=12, proofs=proofs
        )
        committee = run_committee_setup(params, FED, members=members, threshold=threshold)
        admin = Identity.generate(0)
        clients = {name: Identity.generate(0) for name in CLIENTS}
        spec = federation_spec(
            FED,
            {n: i.public for n, i in clients.items()},
            [m.identity.public for m in committee.members],
            params=params,
            threshold=threshold,
            k_min=2,
        )
        roster = SignedRoster.sign(roster_for(spec, admin.public.signing_key.hex()), admin.sign)
        config = spec.model_copy(update={"roster": roster.to_json()})
        return cls(params, committee, admin, clients, config, roster)

    def upload(
        self, client: str, round: int, seed: int = 0, at: int | None = None
    ) -> tuple[bytes, UploadRecord]:
        """A real client's encrypted upload for ``round`` and the record of its signed PUT,
        signed now or, with ``at``, as if at that time."""
        rng = np.random.default_rng(seed + 100 * round + CLIENTS.index(client))
        update = {"w": rng.uniform(-1, 1, 40).astype(np.float32)}
        blob, manifest = prepare_upload(
            update,
            10.0,
            self.committee.public,
            federation=FED,
            round=round,
            client=client,
            roster_digest=self.roster.roster.digest,
        )
        return self.signed(client, round, blob, manifest.to_header(), at)

    def signed(
        self, client: str, round: int, blob: bytes, manifest: str, at: int | None = None
    ) -> tuple[bytes, UploadRecord]:
        """``blob`` and the record of ``client``'s signed PUT of it to ``round``."""
        target = paths.update(FED, round, client)
        with SignedClient(BASE, self.clients[client].signing) as sdk:
            headers = sdk.headers("PUT", target, blob, manifest)
        if at is not None:  # what SignedClient.headers signs, at another time
            digest, nonce = hashlib.sha256(blob).hexdigest(), headers[HEADER_NONCE]
            message = canonical_request("PUT", target, digest, at, nonce, manifest, len(blob))
            signature = self.clients[client].signing.sign(message).hex()
            headers = {**headers, HEADER_TIMESTAMP: str(at), HEADER_SIGNATURE: signature}
        record = UploadRecord(
            client=client,
            sha256=hashlib.sha256(blob).hexdigest(),
            size=len(blob),
            signature=headers[HEADER_SIGNATURE],
            timestamp=int(headers[HEADER_TIMESTAMP]),
            nonce=headers[HEADER_NONCE],
            target=target,
            manifest=manifest,
        )
        return blob, record

    def aggregate_digest(self, blobs: list[bytes], round: int) -> str:
        decoded = (decode_upload(b, self.params) for b in blobs)
        envelope = aggregate_envelope(decoded, self.params, FED, round)
        return hashlib.sha256(envelope).hexdigest()

    def public_key(self) -> bytes:
        return ciphertext_to_bytes(self.committee.public.public_key)

    def endorsement(self, member: int, request: DecryptionRequest) -> str:
        """Member ``member``'s valid endorsement of ``request``'s upload set, signed with its
        own key: what a member colluding with the server signs, for any set."""
        digest = bytes.fromhex(upload_set_digest(request.uploads))
        statement = Endorsement(FED, request.epoch, request.round, digest, member)
        identity = self.committee.members[member - 1].identity
        return statement.signed(identity.sign).to_bytes().decode()

    def statements(self, public_key: bytes, roster: Roster | None = None) -> dict[int, str]:
        """Every member's signed statement that ``public_key`` is the key of ``roster``'s
        first epoch (default: this world's roster, epoch 0)."""
        roster = roster or self.roster.roster
        return {
            m.identity.index: KeyStatement(
                FED, roster.epoch, m.identity.index, roster.digest, key_digest(public_key)
            )
            .signed(m.identity.sign)
            .to_bytes()
            .decode()
            for m in self.committee.members
        }


def epoch_entry(
    world: World,
    epoch: int = 0,
    *,
    phase: KeygenPhase = KeygenPhase.READY,
    key_ready: bool | None = None,
    current: bool = True,
    retired: bool = False,
    roster_version: int = 1,
) -> EpochOut:
    """One key epoch as the real server lists it; the defaults are epoch 0 of a new
    federation: current, not retired, its key ready (``key_ready`` None: once READY)."""
    return EpochOut(
        epoch=epoch,
        roster_version=roster_version,
        phase=phase,
        public_key_ready=phase == KeygenPhase.READY if key_ready is None else key_ready,
        decryptions_used=0,
        tau=world.params.tau,
        current=current,
        retired=retired,
    )


def requested_epoch(request: httpx.Request) -> int | None:
    """The ``?epoch=`` of a key request (None: the current epoch), as the server reads it."""
    value = request.url.params.get("epoch")
    return None if value is None else int(value)


def listed(items: Sequence[BaseModel | str]) -> httpx.Response:
    """A JSON list response: models as their JSON objects, strings as JSON strings."""
    body = [i if isinstance(i, str) else i.model_dump(mode="json") for i in items]
    return httpx.Response(200, content=json.dumps(body))


FORGERIES = {  # a forged roster successor → what following it is refused with
    "signed by another admin": "signed by another admin key",
    "the admin's name, another signer": "not signed by its admin key",
    "a member swapped after signing": "not signed by its admin key",
    "an index handed to another name": "belonged to",
    "a member's keys changed": "changes keys",
}


def forged_successor(
    world: World, impostor: World, forgery: str, seats: Sequence[int]
) -> SignedRoster:
    """Roster version 2 for epoch 1 that gives the member ``seats`` to ``impostor``'s
    committee (keys the server holds), forged as ``forgery`` says: the first three are not
    the admin's signature over it, the last two are, but break the identity rules (an
    index reused by a new name; a name keeping its index under new keys)."""
    genesis = world.roster.roster
    keep_names = forgery == "a member's keys changed"
    theirs = {m.index: m for m in impostor.roster.roster.members}
    members = tuple(
        RosterMember(
            m.name if keep_names else f"server-{m.index}",
            m.index,
            theirs[m.index].signing_key,
            theirs[m.index].encryption_key,
        )
        if m.index in seats
        else m
        for m in genesis.members
    )
    honest = dataclasses.replace(genesis, version=2, epoch=1)
    forged = dataclasses.replace(honest, members=members)
    if forgery == "signed by another admin":
        mine = dataclasses.replace(forged, admin_key=impostor.admin.public.signing_key.hex())
        return SignedRoster.sign(mine, impostor.admin.sign)
    if forgery == "the admin's name, another signer":
        return SignedRoster.sign(forged, impostor.admin.sign)
    if forgery == "a member swapped after signing":
        return dataclasses.replace(SignedRoster.sign(honest, world.admin.sign), roster=forged)
    assert forgery in FORGERIES, forgery
    return SignedRoster.sign(forged, world.admin.sign)


@dataclass
class HostileServer:
    """Serves ``requests`` (round → the decryption request it claims; ``views`` overrides it
    for one (member, round)), ``opened`` rounds (open for uploads), ``blobs`` and the key
    material a test sets (epoch 0's in ``public_key`` and ``statements``, other epochs' in
    ``epoch_keys``); ``chain``, ``epochs`` and ``keygen`` replace the honest roster chain,
    epoch list and key generation status. Records the endorsements, shares and uploads it
    receives, and the path of every key generation message PUT (``puts``)."""

    world: World
    requests: dict[int, DecryptionRequest] = field(default_factory=dict)
    views: dict[tuple[int, int], DecryptionRequest] = field(default_factory=dict)
    endorsed: list[tuple[int, int, str]] = field(default_factory=list)  # (round, member, body)
    blobs: dict[tuple[int, str], bytes] = field(default_factory=dict)
    config: FederationCreate | None = None
    public_key: bytes = b""
    statements: dict[int, str] = field(default_factory=dict)
    shares: list[tuple[int, int, int]] = field(default_factory=list)  # (round, attempt, member)
    uploads: list[tuple[int, str]] = field(default_factory=list)
    opened: set[int] = field(default_factory=set)
    chain: list[SignedRoster] = field(default_factory=list)
    epochs: list[EpochOut] = field(default_factory=list)
    keygen: KeygenStatus | None = None
    epoch_keys: dict[int, tuple[bytes, dict[int, str]]] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)
    tamper: Callable[[httpx.Request, httpx.Response], httpx.Response] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self._route(request, self._caller(request))
        return self.tamper(request, response) if self.tamper else response

    def _caller(self, request: httpx.Request) -> int | None:
        key = request.headers.get(HEADER_KEY, "")
        for secrets in self.world.committee.members:
            if secrets.identity.public.signing_key.hex() == key:
                return secrets.identity.index
        return None

    def shown(self, number: int, member: int | None) -> DecryptionRequest:
        """The request ``member`` sees for round ``number``, with the endorsements this
        server holds: per member, one for the listed set if it has one."""
        request = self.views.get((member or 0, number), self.requests[number])
        wanted = bytes.fromhex(upload_set_digest(request.uploads))
        chosen = dict(request.endorsements)
        for round_, endorser, body in self.endorsed:
            if round_ != number:
                continue
            matches = Endorsement.from_bytes(body).upload_set == wanted
            if endorser not in chosen or matches:
                chosen[endorser] = body
        return request.model_copy(update={"endorsements": chosen})

    def _epochs(self) -> list[EpochOut]:
        return self.epochs or [epoch_entry(self.world)]

    def _current(self) -> int:
        return next(e.epoch for e in self._epochs() if e.current)

    def _federation(self) -> FederationOut:
        return FederationOut(
            id=FED,
            config=self.config or self.world.config,
            epoch=self._current(),
            keygen_phase=KeygenPhase.READY,
            public_key_ready=True,
            decryptions_used=0,
        )

    def _keygen(self) -> KeygenStatus:
        return self.keygen or KeygenStatus(
            epoch=0, phase=KeygenPhase.READY, commitments={}, public_key_shares=[],
            shamir_shares=[], key_statements=sorted(self.statements),
        )  # fmt: skip

    def _key(self, request: httpx.Request) -> tuple[int, bytes, dict[int, str]] | None:
        """The epoch a key request names (none: the current one), its key and statements."""
        epoch = requested_epoch(request)
        epoch = self._current() if epoch is None else epoch
        if epoch == 0:
            return 0, self.public_key, self.statements
        if epoch in self.epoch_keys:
            return epoch, *self.epoch_keys[epoch]
        return None

    def _round(self, number: int, member: int | None = None) -> RoundOut:
        if number not in self.requests:  # opened: uploads come in
            return RoundOut(
                federation=FED, number=number, state=RoundState.OPEN, deadline=0.0,
                uploads=[c for n, c in self.uploads if n == number], reason=None, attempt=0,
                decryption_set=[], model_ready=False, epoch=self._current(),
            )  # fmt: skip
        request = self.views.get((member or 0, number), self.requests[number])
        return RoundOut(
            federation=FED,
            number=number,
            state=request.state,
            deadline=0.0,
            uploads=[u.client for u in request.uploads],
            reason=None,
            attempt=request.attempt,
            decryption_set=request.decryption_set,
            model_ready=False,
            epoch=request.epoch,
        )

    def _route(self, request: httpx.Request, member: int | None) -> httpx.Response:
        path, method = request.url.path, request.method
        if method == "PUT":
            return self._put(path, request.content)
        if path == paths.federation(FED):
            return httpx.Response(200, content=self._federation().model_dump_json())
        if path == paths.rounds(FED):
            return listed([self._round(n, member) for n in sorted({*self.requests, *self.opened})])
        if path == paths.keygen(FED):
            return httpx.Response(200, content=self._keygen().model_dump_json())
        if path in (paths.public_key(FED), paths.key_statements(FED)):
            key = self._key(request)
            if key is None:
                return httpx.Response(404, json={"detail": "no such key epoch"})
            epoch, public_key, statements = key
            if path == paths.public_key(FED):
                return httpx.Response(200, content=public_key)
            body = KeyStatements(epoch=epoch, statements=statements)
            return httpx.Response(200, content=body.model_dump_json())
        if path == paths.roster(FED):
            return httpx.Response(200, content=self.world.roster.to_json())
        if path == paths.rosters(FED):
            return listed([s.to_json() for s in self.chain or [self.world.roster]])
        if path == paths.epochs(FED):
            return listed(self._epochs())
        match = re.fullmatch(rf"{paths.rounds(FED)}/(\d+)(/.*)?", path)
        if match:
            return self._round_route(int(match.group(1)), match.group(2) or "", member)
        return httpx.Response(404, json={"detail": f"the double does not serve {path}"})

    def _round_route(self, number: int, rest: str, member: int | None) -> httpx.Response:
        if rest == "" and (number in self.requests or number in self.opened):
            return httpx.Response(200, content=self._round(number, member).model_dump_json())
        if rest == "/decryption" and number in self.requests:
            return httpx.Response(200, content=self.shown(number, member).model_dump_json())
        if rest.startswith("/updates/"):
            blob = self.blobs.get((number, rest.removeprefix("/updates/")))
            if blob is not None:
                return httpx.Response(200, content=blob)
        return httpx.Response(404, json={"detail": "not found"})

    def _put(self, path: str, body: bytes) -> httpx.Response:
        endorsement = re.fullmatch(rf"{paths.rounds(FED)}/(\d+)/endorsements/(\d+)", path)
        if endorsement:
            number, member = (int(g) for g in endorsement.groups())
            self.endorsed.append((number, member, body.decode()))
            return httpx.Response(204)
        share = re.fullmatch(rf"{paths.rounds(FED)}/(\d+)/decryption/(\d+)/shares/(\d+)", path)
        if share:
            number, attempt, member = (int(g) for g in share.groups())
            self.shares.append((number, attempt, member))
            return httpx.Response(204)
        upload = re.fullmatch(rf"{paths.rounds(FED)}/(\d+)/updates/(.+)", path)
        if upload:
            number, client = int(upload.group(1)), upload.group(2)
            self.uploads.append((number, client))
            receipt = UploadReceipt(
                federation=FED,
                round=number,
                client=client,
                sha256=hashlib.sha256(body).hexdigest(),
                size=len(body),
            )
            return httpx.Response(201, content=receipt.model_dump_json())
        if path.startswith(paths.keygen(FED) + "/"):
            self.puts.append(path)
            return httpx.Response(204)
        return httpx.Response(404, json={"detail": "not found"})

    def member(self, index: int, folder: Path, *, legacy: bool = False) -> MemberAgent:
        """A real member agent after the DKG (its key file in ``folder``), pinned roster; its
        key statement record too, unless ``legacy`` (a DKG run before endorsements)."""
        secrets = self.world.committee.members[index - 1]
        folder.mkdir(parents=True, exist_ok=True)
        statement = folder / KEY_STATEMENT_FILE
        if not legacy and not (folder / MEMBER_KEY).exists():
            statement.write_text(self.world.statements(self.world.public_key())[index])
        if not (folder / MEMBER_KEY).exists():
            secrets.save(folder / MEMBER_KEY, PASSPHRASE, self.world.params)
        client = SignedClient(
            BASE, secrets.identity.signing, transport=httpx.MockTransport(self), retries=0
        )
        return MemberAgent(
            client, FED, secrets.identity, folder, PASSPHRASE, roster=self.world.roster
        )

    def honest_round(
        self, number: int, clients: tuple[str, ...], attempt: int = 1, at: int | None = None
    ) -> None:
        """What an honest server would ask for ``number`` of members 1 to t: the uploads
        (signed now, or ``at``) and their true sum."""
        made = [self.world.upload(c, number, at=at) for c in clients]
        for client, (blob, _) in zip(clients, made, strict=True):
            self.blobs[(number, client)] = blob
        self.requests[number] = DecryptionRequest(
            round=number,
            state=RoundState.DECRYPTING,
            attempt=attempt,
            decryption_set=list(range(1, self.world.config.threshold + 1)),
            aggregate_sha256=self.world.aggregate_digest([b for b, _ in made], number),
            uploads=[r for _, r in made],
        )
