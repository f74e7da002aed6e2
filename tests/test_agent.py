"""The member agent against a fake aggregator (``httpx.MockTransport``): the ledger records
the share and its round's upload set before the PUT leaves, a crash at any point re-sends
the stored bytes rather than new ones, a re-listed upload set is refused and logged, and a
tampered ledger stops every release. Its loop endorses every decrypting round's upload set
(pinned in the ledger first, no τ spent), once per round, named or not, and a named member
shares only once a quorum (here all 3 members) endorsed the set. A member that joined
before endorsements (no key statement record) gets an upgrade floor on its first ledger
load and refuses rounds uploaded before it; every finished round is recorded completed.

The fake serves what the real server serves for a federation created with one signed
roster and a finished epoch-0 key: the config carrying that roster, the roster chain, the
epoch list and a READY key generation status."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from he_agg.api import paths
from he_agg.api.models import (
    DecryptionRequest,
    EpochOut,
    FederationCreate,
    FederationOut,
    KeygenStatus,
    RoundOut,
)
from he_agg.api.roster_check import roster_for
from he_agg.api.states import KeygenPhase
from he_agg.api.transport import SignedClient
from he_agg.endorsement import Endorsement, upload_set_digest
from he_agg.errors import KeyStoreError, ServiceError
from he_agg.key_statement import KeyStatement, key_digest
from he_agg.roster import SignedRoster
from he_agg.seal_codec import ciphertext_to_bytes
from keys import agent as agent_module
from keys.agent import MemberAgent
from keys.dkg import KEY_STATEMENT_FILE, MEMBER_KEY, destroy_epoch
from keys.identity import Identity
from keys.ledger import LEDGER_FILE, SEQ_FILE, Ledger, LedgerState, ledger_key, share_path
from keys.verify import parameters
from tests.test_member_verify import FED, ROUND, Setup, build_setup, digest_of_sum

PASSPHRASE = "member passphrase"
ADMIN = Identity.generate(0)


class Aggregator:
    """Serves the round's uploads, the federation (its config carrying the signed creation
    roster), the roster chain (that roster alone), its one key epoch (0, current; retired
    once a test sets ``retired``) and that epoch's finished key generation, and the round
    list (empty until a test sets ``round``, then that round) and that decryption request,
    with the endorsements PUT to it merged in. Takes endorsements and decryption shares,
    checking the member's ledger on disk at the moment each PUT arrives."""

    def __init__(
        self,
        blobs: dict[str, bytes],
        ledger: Ledger,
        config: FederationCreate,
        roster: SignedRoster,
    ) -> None:
        self.blobs = blobs
        self.ledger = ledger
        self.roster = roster
        self.config = config.model_copy(update={"roster": roster.to_json()})
        self.round: DecryptionRequest | None = None
        self.endorsed: dict[int, str] = {}  # what members PUT
        self.puts: list[tuple[str, bytes]] = []
        self.ledger_at_put: list[LedgerState] = []
        self.failures = 0  # the next PUTs that fail (the "crash" before the share leaves)
        self.retired = False  # epoch 0 listed retired: members destroy its secrets

    @property
    def decryptions_used(self) -> int:
        """Decryption sets named against τ: one per attempt of the round."""
        return 0 if self.round is None else self.round.attempt

    def served(self) -> DecryptionRequest:
        assert self.round is not None
        bodies = {**self.round.endorsements, **self.endorsed}
        return self.round.model_copy(update={"endorsements": bodies})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET":
            return self._get(path)
        self.ledger_at_put.append(self.ledger.load())
        if self.failures:
            self.failures -= 1
            return httpx.Response(500, json={"detail": "the aggregator fell over"})
        self.puts.append((path, request.content))
        for member in (1, 2, 3):
            if path == paths.endorsement(FED, ROUND, member):
                self.endorsed[member] = request.content.decode()
        return httpx.Response(204)

    def _get(self, path: str) -> httpx.Response:
        for client, blob in self.blobs.items():
            if path == paths.update(FED, ROUND, client):
                return httpx.Response(200, content=blob)
        if path == paths.federation(FED):
            body = FederationOut(
                id=FED,
                config=self.config,
                epoch=0,
                keygen_phase=KeygenPhase.READY,
                public_key_ready=True,
                decryptions_used=self.decryptions_used,
            )
            return httpx.Response(200, content=body.model_dump_json())
        if path == paths.rosters(FED):
            return httpx.Response(200, content=json.dumps([self.roster.to_json()]))
        if path == paths.epochs(FED):
            return httpx.Response(200, content=f"[{self._epoch().model_dump_json()}]")
        if path == paths.keygen(FED):
            return httpx.Response(200, content=self._keygen().model_dump_json())
        if self.round is None and path == paths.rounds(FED):
            return httpx.Response(200, content="[]")
        if self.round is not None and path == paths.rounds(FED):
            status = RoundOut(
                federation=FED,
                number=ROUND,
                state=self.round.state,
                deadline=0.0,
                uploads=[u.client for u in self.round.uploads],
                reason=None,
                attempt=self.round.attempt,
                decryption_set=self.round.decryption_set,
                model_ready=False,
            )
            return httpx.Response(200, content=f"[{status.model_dump_json()}]")
        if self.round is not None and path == paths.decryption(FED, ROUND):
            return httpx.Response(200, content=self.served().model_dump_json())
        return httpx.Response(404, json={"detail": "not found"})

    def _epoch(self) -> EpochOut:
        return EpochOut(
            epoch=0,
            roster_version=self.roster.roster.version,
            phase=KeygenPhase.READY,
            public_key_ready=True,
            decryptions_used=self.decryptions_used,
            tau=parameters(self.config).tau,
            current=True,
            retired=self.retired,
        )

    def _keygen(self) -> KeygenStatus:
        """Epoch 0's DKG, finished: every message of every member is in. (The member holds
        its key already, so it reads only the epoch and the phase.)"""
        members = [m.index for m in self.roster.roster.members]
        return KeygenStatus(
            epoch=0,
            phase=KeygenPhase.READY,
            commitments={m: f"{m:064x}:{m:0128x}" for m in members},
            public_key_shares=members,
            shamir_shares=[(i, j) for i in members for j in members],
            key_statements=members,
        )


@pytest.fixture(scope="module")
def world() -> Setup:
    return build_setup()


def _roster(world: Setup) -> SignedRoster:
    return SignedRoster.sign(roster_for(world.config, ADMIN.public.signing_key.hex()), ADMIN.sign)


@pytest.fixture
def folder(tmp_path: Path, world: Setup) -> Path:
    """Member 1's state folder after a DKG that signed the key (its key statement record,
    then its key file), nothing decrypted yet."""
    member = world.committee.members[0]
    key = key_digest(ciphertext_to_bytes(world.committee.public.public_key))
    statement = KeyStatement(FED, 0, 1, _roster(world).roster.digest, key)
    (tmp_path / KEY_STATEMENT_FILE).write_bytes(statement.signed(member.identity.sign).to_bytes())
    member.save(tmp_path / MEMBER_KEY, PASSPHRASE, world.params)
    return tmp_path


def _ledger(world: Setup, folder: Path) -> Ledger:
    identity = world.committee.members[0].identity
    return Ledger(folder, ledger_key(identity, FED), FED)


@pytest.fixture
def aggregator(world: Setup, folder: Path) -> Aggregator:
    return Aggregator(dict(world.blobs), _ledger(world, folder), world.config, _roster(world))


def _agent(world: Setup, folder: Path, aggregator: Aggregator) -> MemberAgent:
    """A fresh agent process on ``folder`` (nothing in memory from an earlier one)."""
    member = world.committee.members[0].identity
    roster = _roster(world)
    client = SignedClient(
        "http://aggregator.test",
        member.signing,
        transport=httpx.MockTransport(aggregator),
        retries=0,
    )
    return MemberAgent(client, FED, member, folder, PASSPHRASE, roster=roster)


def _share_put(attempt: int) -> str:
    return paths.decryption_share(FED, ROUND, attempt, 1)


@pytest.fixture
def member_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="he_agg.member"):
        yield caplog


# ---- order: recorded, then sent; the same bytes ever after ---------------------------------


def test_the_share_and_its_upload_set_are_recorded_before_the_put(
    world: Setup, folder: Path, aggregator: Aggregator
) -> None:
    assert _agent(world, folder, aggregator).handle(world.config, world.request)
    (seen,) = aggregator.ledger_at_put
    assert seen.shares == ((ROUND, 1),)
    pin = seen.pin(ROUND)
    assert pin is not None
    assert pin.uploads == upload_set_digest(world.request.uploads)
    assert (pin.aggregate, pin.count) == (world.request.aggregate_sha256, 3)
    ((path, sent),) = aggregator.puts
    assert path == _share_put(1)
    assert sent == share_path(folder, ROUND, 1).read_bytes()


def test_a_failed_put_is_retried_with_the_same_bytes_after_a_restart(
    world: Setup, folder: Path, aggregator: Aggregator
) -> None:
    aggregator.failures = 1
    with pytest.raises(ServiceError):
        _agent(world, folder, aggregator).handle(world.config, world.request)
    assert aggregator.puts == []
    assert _ledger(world, folder).load().shares == ((ROUND, 1),)  # counted though not sent
    stored = share_path(folder, ROUND, 1).read_bytes()
    assert _agent(world, folder, aggregator).handle(world.config, world.request)
    assert _agent(world, folder, aggregator).handle(world.config, world.request)
    assert [sent for _, sent in aggregator.puts] == [stored, stored]
    assert _ledger(world, folder).load().spent == 1


def test_a_crash_after_recording_sends_the_kept_share_not_a_new_one(
    world: Setup, folder: Path, aggregator: Aggregator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the ledger write and moving the share into place."""

    def crash(source: Path, target: Path) -> None:
        raise OSError("killed")

    monkeypatch.setattr(agent_module, "replace_durably", crash)
    with pytest.raises(OSError, match="killed"):
        _agent(world, folder, aggregator).handle(world.config, world.request)
    monkeypatch.undo()
    pending = share_path(folder, ROUND, 1).with_suffix(".pending")
    kept = pending.read_bytes()
    assert _ledger(world, folder).load().shares == ((ROUND, 1),)
    assert _agent(world, folder, aggregator).handle(world.config, world.request)
    assert aggregator.puts == [(_share_put(1), kept)]
    assert share_path(folder, ROUND, 1).read_bytes() == kept and not pending.exists()


def test_a_share_kept_but_never_recorded_is_remade_and_recorded(
    world: Setup, folder: Path, aggregator: Aggregator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before the ledger write: the kept share never left, so it is not binding."""

    def crash(
        self: Ledger, round: int, attempt: int, pin: object = None, epoch: int = 0
    ) -> LedgerState:
        raise OSError("killed")

    monkeypatch.setattr(Ledger, "record_share", crash)
    with pytest.raises(OSError, match="killed"):
        _agent(world, folder, aggregator).handle(world.config, world.request)
    monkeypatch.undo()
    abandoned = share_path(folder, ROUND, 1).with_suffix(".pending").read_bytes()
    assert _ledger(world, folder).load().shares == ()
    assert _agent(world, folder, aggregator).handle(world.config, world.request)
    ((_, sent),) = aggregator.puts
    assert sent != abandoned  # fresh flooding noise: it was remade
    assert sent == share_path(folder, ROUND, 1).read_bytes()
    assert aggregator.ledger_at_put[0].shares == ((ROUND, 1),)


# ---- refusals, logged ----------------------------------------------------------------------


def test_a_round_relisted_with_a_subset_is_refused_and_logged(
    world: Setup,
    folder: Path,
    aggregator: Aggregator,
    member_log: pytest.LogCaptureFixture,
) -> None:
    """The measured break: a first attempt over four uploads, then one over three of them."""
    aggregator.blobs["bank-4"] = world.upload("bank-4")
    four = [*world.request.uploads, world.record("bank-4", aggregator.blobs["bank-4"])]
    digest = digest_of_sum(list(aggregator.blobs.values()), world.params)
    first = world.endorsed(
        world.request.model_copy(update={"uploads": four, "aggregate_sha256": digest})
    )
    agent = _agent(world, folder, aggregator)
    assert agent.handle(world.config, first)
    subset = world.request.model_copy(update={"attempt": 2, "decryption_set": [1, 3]})
    assert agent.handle(world.config, subset) is False
    assert [path for path, _ in aggregator.puts] == [_share_put(1)]
    assert _ledger(world, folder).load().shares == ((ROUND, 1),)
    reasons = [getattr(r, "reason", "") for r in member_log.records]
    pinned = upload_set_digest(four)[:16]
    assert any(f"pinned to the upload set {pinned}" in r for r in reasons), reasons


def test_a_request_for_another_epoch_is_refused_and_logged(
    world: Setup,
    folder: Path,
    aggregator: Aggregator,
    member_log: pytest.LogCaptureFixture,
) -> None:
    request: DecryptionRequest = world.request.model_copy(update={"epoch": 1})
    assert _agent(world, folder, aggregator).handle(world.config, request) is False
    assert aggregator.puts == [] and not share_path(folder, ROUND, 1).exists()
    assert any("no key of epoch 1" in getattr(r, "reason", "") for r in member_log.records)


def test_a_tampered_ledger_stops_every_release_and_is_logged(
    world: Setup,
    folder: Path,
    aggregator: Aggregator,
    member_log: pytest.LogCaptureFixture,
) -> None:
    assert _agent(world, folder, aggregator).handle(world.config, world.request)
    raw = json.loads((folder / LEDGER_FILE).read_bytes())
    raw["shares"] = []  # τ reset, the round forgotten
    (folder / LEDGER_FILE).write_text(json.dumps(raw))
    again = world.request.model_copy(update={"attempt": 2})
    for request in (world.request, again):  # neither a re-send nor a new share
        with pytest.raises(KeyStoreError, match="integrity check"):
            _agent(world, folder, aggregator).handle(world.config, request)
    assert len(aggregator.puts) == 1
    refusals = [r for r in member_log.records if r.getMessage().startswith("member ledger")]
    assert len(refusals) == 2 and all(r.levelno == logging.ERROR for r in refusals)
    assert "integrity check" in getattr(refusals[0], "reason", "")


# ---- the loop: endorse every decrypting round, share only with a quorum ---------------------


def _endorsement_puts(aggregator: Aggregator) -> list[int]:
    """Where the endorsement PUTs are in ``puts`` (and so in ``ledger_at_put``)."""
    return [i for i, (path, _) in enumerate(aggregator.puts) if "/endorsements/" in path]


def _share_puts(aggregator: Aggregator) -> list[str]:
    return [path for path, _ in aggregator.puts if "/shares/" in path]


def test_a_member_outside_the_set_endorses_pinning_first_and_spends_no_tau(
    world: Setup, folder: Path, aggregator: Aggregator
) -> None:
    aggregator.round = world.request.model_copy(
        update={"decryption_set": [2, 3], "endorsements": {}}
    )
    agent = _agent(world, folder, aggregator)
    agent.step()
    (at,) = _endorsement_puts(aggregator)
    path, body = aggregator.puts[at]
    assert path == paths.endorsement(FED, ROUND, 1)
    seen = aggregator.ledger_at_put[at]  # the pin was on disk before the PUT left
    pin = seen.pin(ROUND)
    assert pin is not None and pin.uploads == upload_set_digest(world.request.uploads)
    assert seen.spent == 0 and _ledger(world, folder).load().spent == 0
    endorsement = Endorsement.from_bytes(body)
    assert (endorsement.member, endorsement.upload_set.hex()) == (1, pin.uploads)
    endorsement.verify(world.committee.members[0].identity.public.signing_key)
    assert _share_puts(aggregator) == []
    agent.step()
    _agent(world, folder, aggregator).step()  # a restarted agent: the server holds it already
    assert len(_endorsement_puts(aggregator)) == 1


def test_a_named_member_waits_for_a_quorum_then_shares(
    world: Setup,
    folder: Path,
    aggregator: Aggregator,
    member_log: pytest.LogCaptureFixture,
) -> None:
    quorum_of_all = world.request.endorsements
    aggregator.round = world.request.model_copy(update={"endorsements": {2: quorum_of_all[2]}})
    agent = _agent(world, folder, aggregator)
    for _ in range(3):
        agent.step()
    assert _share_puts(aggregator) == []  # members 1 and 2 of the 3 needed
    waiting = [r for r in member_log.records if r.getMessage().startswith("waiting for a quorum")]
    assert len(waiting) == 1 and waiting[0].levelno == logging.INFO  # said once, not per poll
    assert getattr(waiting[0], "endorsed", None) == [1, 2]
    warnings = [r.getMessage() for r in member_log.records if r.levelno >= logging.WARNING]
    # the only warning: this test's parameter set has no upload proofs, said once per run
    assert len(warnings) == 1 and "no proofs of well-formed uploads" in warnings[0]
    aggregator.round = world.request  # member 3's endorsement arrives
    agent.step()
    assert _share_puts(aggregator) == [_share_put(1)]
    assert _ledger(world, folder).load().spent == 1


def test_a_second_set_for_the_round_is_neither_endorsed_nor_decrypted(
    world: Setup,
    folder: Path,
    aggregator: Aggregator,
    member_log: pytest.LogCaptureFixture,
) -> None:
    """A split view: the server shows member 1 another set, endorsed by members 2 and 3."""
    aggregator.round = world.request.model_copy(
        update={"decryption_set": [2, 3], "endorsements": {}}
    )
    agent = _agent(world, folder, aggregator)
    agent.step()
    assert len(_endorsement_puts(aggregator)) == 1
    aggregator.blobs["bank-4"] = world.upload("bank-4")  # bank-3 swapped for bank-4
    other = [*world.request.uploads[:2], world.record("bank-4", aggregator.blobs["bank-4"])]
    digest = digest_of_sum([aggregator.blobs[u.client] for u in other], world.params)
    shown = world.request.model_copy(
        update={"attempt": 2, "uploads": other, "aggregate_sha256": digest}
    )
    aggregator.round = world.endorsed(shown, (2, 3))
    aggregator.endorsed = {}
    for _ in range(2):
        agent.step()
    assert len(_endorsement_puts(aggregator)) == 1 and _share_puts(aggregator) == []
    refusals = [r for r in member_log.records if r.getMessage() == "endorsement refused"]
    assert len(refusals) == 1 and "pinned to the upload set" in getattr(refusals[0], "reason", "")
    pin = _ledger(world, folder).load().pin(ROUND)
    assert pin is not None and pin.uploads == upload_set_digest(world.request.uploads)


# ---- the upgrade floor; every finished round recorded ---------------------------------------


def _seq(folder: Path) -> int:
    value = json.loads((folder / SEQ_FILE).read_bytes())["seq"]
    assert isinstance(value, int)
    return value


def test_a_member_that_joined_before_endorsements_gets_a_floor_at_start(
    world: Setup, folder: Path, aggregator: Aggregator, member_log: pytest.LogCaptureFixture
) -> None:
    """member.key without a key statement record: the DKG ran under the old code. A round
    whose uploads predate the upgrade is neither endorsed nor decrypted; a newer one is."""
    (folder / KEY_STATEMENT_FILE).unlink()
    before = int(time.time())
    agent = _agent(world, folder, aggregator)
    floor = agent.ledger().floor
    assert floor is not None and before <= floor <= time.time()
    assert _agent(world, folder, aggregator).ledger().floor == floor  # set once, kept
    hour_ago = floor - 3600
    old = [
        world.record(u.client, world.blobs[u.client], at=hour_ago) for u in world.request.uploads
    ]
    aggregator.round = world.endorsed(world.request.model_copy(update={"uploads": old}))
    for _ in range(2):
        agent.step()
    assert aggregator.puts == [] and _ledger(world, folder).load().pin(ROUND) is None
    refusals = [r for r in member_log.records if r.getMessage() == "endorsement refused"]
    assert len(refusals) == 1 and f"upgrade floor {floor}" in getattr(refusals[0], "reason", "")
    assert agent.handle(world.config, aggregator.served()) is False  # nor decrypted
    fresh = [world.record(u.client, world.blobs[u.client]) for u in world.request.uploads]
    aggregator.round = world.endorsed(world.request.model_copy(update={"uploads": fresh}))
    agent.step()  # a round uploaded after the upgrade
    assert _share_puts(aggregator) == [_share_put(1)]


@pytest.mark.parametrize("joined", [True, False], ids=["dkg-signed-the-key", "not-joined-yet"])
def test_a_member_with_a_key_statement_or_no_key_gets_no_floor(
    world: Setup, folder: Path, aggregator: Aggregator, joined: bool
) -> None:
    if not joined:
        for name in (KEY_STATEMENT_FILE, MEMBER_KEY):
            (folder / name).unlink()
    assert _agent(world, folder, aggregator).ledger().floor is None
    assert not (folder / LEDGER_FILE).exists()  # nothing to record


def test_an_existing_floor_is_never_moved(
    world: Setup, folder: Path, aggregator: Aggregator
) -> None:
    (folder / KEY_STATEMENT_FILE).unlink()
    _ledger(world, folder).record_floor(1_000)
    assert _agent(world, folder, aggregator).ledger().floor == 1_000
    assert _seq(folder) == 1


@pytest.mark.parametrize("state", ["published", "aborted"])
def test_every_finished_round_is_recorded_completed_once(
    world: Setup, folder: Path, aggregator: Aggregator, state: str
) -> None:
    """A round this member never touched: recorded all the same (no τ, one write), so it
    is never endorsed or decrypted again, whatever attempt the server shows next."""
    aggregator.round = world.request.model_copy(update={"state": state})
    agent = _agent(world, folder, aggregator)
    agent.step()
    ledger = _ledger(world, folder).load()
    assert ledger.completed == (ROUND,) and ledger.spent == 0 and ledger.pins == ()
    for _ in range(3):
        agent.step()
    assert _seq(folder) == 1  # no write per poll
    aggregator.round = world.request.model_copy(update={"attempt": 2})
    agent.step()
    assert aggregator.puts == []


# ---- key epochs: a retired epoch's secrets are destroyed -------------------------------------


def test_a_retired_epoch_is_recorded_destroyed_before_its_secrets_go(
    world: Setup,
    folder: Path,
    aggregator: Aggregator,
    monkeypatch: pytest.MonkeyPatch,
    member_log: pytest.LogCaptureFixture,
) -> None:
    """The server lists epoch 0 retired: the ledger records it destroyed (fsynced) before
    member.key is overwritten and removed; the public key statement stays, and the member
    neither endorses nor decrypts under that epoch again."""
    ledger_at_destroy: list[LedgerState] = []

    def spy(epoch_folder: Path) -> bool:
        ledger_at_destroy.append(_ledger(world, folder).load())
        return destroy_epoch(epoch_folder)

    monkeypatch.setattr(agent_module, "destroy_epoch", spy)
    agent = _agent(world, folder, aggregator)
    agent.step()  # epoch 0 current and not retired: kept
    assert ledger_at_destroy == [] and (folder / MEMBER_KEY).exists()
    aggregator.retired = True
    agent.step()
    (seen,) = ledger_at_destroy
    assert seen.destroyed == (0,)
    assert _ledger(world, folder).load().destroyed == (0,)
    assert not (folder / MEMBER_KEY).exists() and (folder / KEY_STATEMENT_FILE).exists()
    assert agent.held_epochs() == []
    aggregator.round = world.request  # a decrypting round of the destroyed epoch
    for _ in range(2):
        agent.step()
    assert aggregator.puts == [] and len(ledger_at_destroy) == 1
    assert agent.handle(world.config, world.request) is False
    reasons = [getattr(r, "reason", "") for r in member_log.records]
    assert "this member holds no key of epoch 0" in reasons
