"""A hostile aggregator against real member agents and a real participant.

Each test changes one thing about an honest round, as a lying server would, and runs
the real agents' loop (``MemberAgent.step``) against it. No attack may get a share out
of a member. Members decrypt only an upload set a quorum of q = ⌈(n + t)/2⌉ of them
endorsed (here n=3, t=2: all three), so the server re-listing a round with a subset,
showing members different sets, or doing either with t−1 = 1 corrupt member on its side,
never has two sets decrypted. Key epochs: a roster successor the admin did not sign, or
one that hands a member's index or name to other keys, is not followed (no key generation
with the server on the committee), and a request under an epoch a member holds no key
of (never generated, or destroyed once the epoch was retired) gets nothing. Members that
joined before endorsements existed carry an upgrade floor and never take part in a round
uploaded before it (the last attack, with n=5, t=3, q=4). ``RELEASED`` counts shares
released to attacks over the whole suite; the last test asserts it is zero and that
every attack ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from he_agg.api import paths
from he_agg.api.models import DecryptionRequest, KeygenStatus
from he_agg.api.states import KeygenPhase
from he_agg.endorsement import Endorsement, upload_set_digest
from he_agg.envelope import decode_upload, encode_upload
from he_agg.errors import KeyStoreError, ProtocolError
from he_agg.rlwe import key_rows, sample_witness
from he_agg.roster import SignedRoster
from he_agg.wellformed import ProofContext, prove_upload
from keys.agent import MemberAgent
from keys.ledger import Ledger, Pin, ledger_key
from keys.pinning import pin_roster
from tests.adversarial.double import (
    CLIENTS,
    FED,
    FORGERIES,
    HostileServer,
    World,
    epoch_entry,
    forged_successor,
)

RELEASED: dict[str, int] = {}


@pytest.fixture(scope="module")
def world() -> World:
    return World.build()


@pytest.fixture
def server(world: World) -> HostileServer:
    return HostileServer(world)


def _members(server: HostileServer, folder: Path) -> list[MemberAgent]:
    return [server.member(index, folder / f"member-{index}") for index in (1, 2, 3)]


def _run(agents: list[MemberAgent], times: int = 2) -> None:
    """The agents' own loop body, as ``run`` calls it; errors are what ``run`` would log."""
    for _ in range(times):
        for agent in agents:
            with contextlib.suppress(Exception):  # the loop logs and goes on the same way
                agent.step()


def _attack(
    name: str, server: HostileServer, agents: list[MemberAgent], number: int, attempt: int
) -> None:
    before = len(server.shares)
    _run(agents)
    released = [s for s in server.shares[before:] if s[:2] == (number, attempt)]
    RELEASED[name] = len(released)
    assert released == [], f"{name}: shares released {released}"


def _changed(request: DecryptionRequest, **update: object) -> DecryptionRequest:
    return request.model_copy(update=update)


def _relist_subset(server: HostileServer, number: int) -> DecryptionRequest:
    """The measured break: round ``number`` asked again (attempt 2, another decryption set)
    with only its first two uploads, and their true sum."""
    first = server.requests[number]
    subset = [server.blobs[(number, c)] for c in CLIENTS[:2]]
    server.requests[number] = _changed(
        first,
        attempt=2,
        decryption_set=[1, 3],
        uploads=first.uploads[:2],
        aggregate_sha256=server.world.aggregate_digest(subset, number),
    )
    return server.requests[number]


def _first_endorsement(server: HostileServer, number: int, member: int) -> str:
    return next(body for n, m, body in server.endorsed if (n, m) == (number, member))


# ---- the control: an honest round gets its shares ----------------------------------------


def test_an_honest_round_gets_its_shares(server: HostileServer, tmp_path: Path) -> None:
    server.honest_round(1, CLIENTS[:3])
    _run(_members(server, tmp_path))
    assert sorted(server.shares) == [(1, 1, 1), (1, 1, 2)]


# ---- attacks on one round ------------------------------------------------------------------


def _lie(
    name: str,
    server: HostileServer,
    tmp_path: Path,
    change: Callable[[HostileServer, DecryptionRequest], DecryptionRequest],
) -> None:
    server.honest_round(1, CLIENTS[:3])
    server.requests[1] = change(server, server.requests[1])
    _attack(name, server, _members(server, tmp_path), 1, server.requests[1].attempt)


def test_one_clients_upload_presented_as_the_aggregate(
    server: HostileServer, tmp_path: Path
) -> None:
    def as_aggregate(s: HostileServer, r: DecryptionRequest) -> DecryptionRequest:
        lone = s.blobs[(1, CLIENTS[0])]
        return _changed(r, aggregate_sha256=hashlib.sha256(lone).hexdigest())

    _lie("upload as aggregate", server, tmp_path, as_aggregate)


def test_a_tweaked_aggregate_word(server: HostileServer, tmp_path: Path) -> None:
    def tweaked(s: HostileServer, r: DecryptionRequest) -> DecryptionRequest:
        digest = bytearray(bytes.fromhex(r.aggregate_sha256))
        digest[0] ^= 1  # the digest of an aggregate that differs from the true sum
        return _changed(r, aggregate_sha256=digest.hex())

    _lie("tweaked aggregate", server, tmp_path, tweaked)


def test_fewer_than_k_min_uploads(server: HostileServer, tmp_path: Path) -> None:
    def fewer(s: HostileServer, r: DecryptionRequest) -> DecryptionRequest:
        (blob,) = [s.blobs[(1, CLIENTS[0])]]
        return _changed(
            r, uploads=r.uploads[:1], aggregate_sha256=s.world.aggregate_digest([blob], 1)
        )

    _lie("below K_min", server, tmp_path, fewer)


def test_more_than_k_max_uploads(server: HostileServer, tmp_path: Path) -> None:
    server.honest_round(1, CLIENTS)  # four uploads; the parameter set's K_max is 3
    _attack("above K_max", server, _members(server, tmp_path), 1, 1)


@pytest.mark.parametrize("named", [[1, 1], [1, 9], [1]])
def test_duplicated_unenrolled_or_too_few_members(
    server: HostileServer, tmp_path: Path, named: list[int]
) -> None:
    _lie(
        f"decryption set {named}", server, tmp_path, lambda s, r: _changed(r, decryption_set=named)
    )


def test_uploads_from_another_round(server: HostileServer, tmp_path: Path) -> None:
    """Round 1's signed uploads replayed as round 2's."""
    server.honest_round(1, CLIENTS[:3])
    old = server.requests.pop(1)
    for client in CLIENTS[:3]:
        server.blobs[(2, client)] = server.blobs[(1, client)]
    server.requests[2] = _changed(old, round=2)
    _attack("uploads of another round", server, _members(server, tmp_path), 2, 1)


def test_a_request_for_another_epoch(server: HostileServer, tmp_path: Path) -> None:
    _lie("another epoch", server, tmp_path, lambda s, r: _changed(r, epoch=1))


def test_a_configuration_that_differs_from_the_pinned_roster(
    server: HostileServer, tmp_path: Path, world: World
) -> None:
    """The server enrols a client of its own in what it serves."""
    agents = _members(server, tmp_path)
    _run(agents, times=1)  # the members pin the honest configuration
    extra = world.config.clients[0].model_copy(update={"name": "server-sybil"})
    server.config = world.config.model_copy(update={"clients": [*world.config.clients, extra]})
    server.honest_round(1, CLIENTS[:3])
    _attack("configuration not the roster", server, agents, 1, 1)


# ---- attacks across attempts ---------------------------------------------------------------


def test_a_relist_with_a_subset(server: HostileServer, tmp_path: Path) -> None:
    """The measured break: shares for {c1, c2, c3}, then a new attempt with {c1, c2}."""
    agents = _members(server, tmp_path)
    server.honest_round(1, CLIENTS[:3])
    _run(agents)
    assert {s[:2] for s in server.shares} == {(1, 1)}
    _relist_subset(server, 1)
    _attack("re-list with a subset", server, agents, 1, 2)


def test_a_replayed_request_for_a_finished_round(server: HostileServer, tmp_path: Path) -> None:
    """After round 1 is published, the server asks for it again as a new attempt."""
    agents = _members(server, tmp_path)
    server.honest_round(1, CLIENTS[:3])
    _run(agents)
    request = server.requests[1]
    server.requests[1] = _changed(request, state="published")
    _run(agents, times=1)  # the members see it published and mark it completed
    server.requests[1] = _changed(request, attempt=2, decryption_set=[1, 3])
    _attack("replayed finished round", server, agents, 1, 2)


def test_a_rolled_back_ledger(server: HostileServer, tmp_path: Path) -> None:
    """Member 1's ledger is put back to before its round-2 share; the server re-asks round 2
    with a subset, and members 2 and 3 (colluding here, to isolate member 1's defence) endorse
    it. A member that believed the restored ledger would complete the quorum and share."""
    agents = _members(server, tmp_path)
    folder = tmp_path / "member-1"
    server.honest_round(1, CLIENTS[:3])
    _run(agents)  # member 1 shares round 1: its ledger exists from here on
    snapshot = tmp_path / "before"
    snapshot.mkdir()
    for name in ("ledger.json", "ledger.seq"):
        shutil.copy2(folder / name, snapshot / name)
    server.honest_round(2, CLIENTS[:3])
    _run(agents)
    assert (2, 1, 1) in server.shares  # member 1 shared round 2, then loses that memory
    for name in ("ledger.json", "ledger.seq"):
        shutil.copy2(snapshot / name, folder / name)
    relisted = _relist_subset(server, 2)
    for colluder in (2, 3):
        server.endorsed.append((2, colluder, server.world.endorsement(colluder, relisted)))
    restarted = server.member(1, folder)
    with pytest.raises(KeyStoreError):
        restarted.ledger()  # the share file of round 2 is not in the restored ledger
    _attack("rolled-back ledger", server, [restarted], 2, 2)
    assert not [
        e for e in server.endorsed if e[:2] == (2, 1) and e[2] != _first_endorsement(server, 2, 1)
    ]


def _subset_request(server: HostileServer, first: DecryptionRequest) -> DecryptionRequest:
    """Round 1 re-listed without bank-3 (attempt 2, set {1, 3}), honestly summed."""
    subset = [server.blobs[(1, c)] for c in CLIENTS[:2]]
    return _changed(
        first,
        attempt=2,
        decryption_set=[1, 3],
        uploads=first.uploads[:2],
        aggregate_sha256=server.world.aggregate_digest(subset, 1),
        endorsements={},
    )


@pytest.mark.parametrize("colluder", [False, True], ids=["server-alone", "with-member-2"])
def test_a_split_view_collects_no_quorum_for_either_set(
    server: HostileServer, tmp_path: Path, colluder: bool
) -> None:
    """Members 1 and 2 are shown {c1, c2, c3}, member 3 is shown {c1, c2}; the server (and,
    with-member-2, the corrupt member 2, who signs whatever it is asked) then shows every
    member the other set, to complete a quorum for each."""
    agents = _members(server, tmp_path)
    if colluder:
        agents = [agents[0], agents[2]]  # member 2 runs no honest agent
    server.honest_round(1, CLIENTS[:3])
    full = server.requests[1]
    subset = _subset_request(server, full)
    server.views[(3, 1)] = _changed(subset, attempt=1)
    if colluder:
        server.requests[1] = _changed(full, endorsements={2: server.world.endorsement(2, full)})
        server.views[(3, 1)] = _changed(
            subset, attempt=1, endorsements={2: server.world.endorsement(2, subset)}
        )
    _run(agents)
    assert server.shares == []  # neither set has a quorum: {1, 2} and {3} (+2 if corrupt)
    server.views.clear()
    forged = {2: server.world.endorsement(2, subset)} if colluder else {}
    server.requests[1] = _changed(subset, endorsements=forged)
    _attack(
        "split view, second set" + (" with a colluder" if colluder else ""), server, agents, 1, 2
    )
    third = _changed(full, attempt=3, decryption_set=[1, 3])
    forged = {2: server.world.endorsement(2, third)} if colluder else {}
    server.requests[1] = _changed(third, endorsements=forged)
    _run(agents)
    assert server.shares == []  # member 3 is pinned to the other set: {c1, c2, c3} is stuck
    endorsers = {(member, body) for _, member, body in server.endorsed}
    assert len({m for m, _ in endorsers}) == len(endorsers)  # one set per honest member


def test_a_colluding_member_and_a_relist_with_a_subset(
    server: HostileServer, tmp_path: Path
) -> None:
    """t−1 = 1 corrupt member (2) signs endorsements for any set; after an honest round the
    server re-lists it with a subset, endorsed by member 2: members 1 and 3 give nothing."""
    everyone = _members(server, tmp_path)
    honest = [everyone[0], everyone[2]]
    server.honest_round(1, CLIENTS[:3])
    first = server.requests[1]
    server.requests[1] = _changed(first, endorsements={2: server.world.endorsement(2, first)})
    _run(honest)
    assert sorted(server.shares) == [(1, 1, 1)]  # the honest set had its quorum {1, 2, 3}
    subset = _subset_request(server, first)
    server.requests[1] = _changed(subset, endorsements={2: server.world.endorsement(2, subset)})
    _attack("colluding member, re-list with a subset", server, honest, 1, 2)
    shown = server.shown(1, 1)
    assert set(shown.endorsements) == {1, 2, 3}  # the server hands out all it has …
    subset_digest = bytes.fromhex(upload_set_digest(subset.uploads))
    matching = [
        m for m, body in shown.endorsements.items()
        if Endorsement.from_bytes(body).upload_set == subset_digest
    ]  # fmt: skip
    assert matching == [2]  # … but only the corrupt member endorsed the subset


# ---- key epochs: roster successors ----------------------------------------------------------


@pytest.fixture(scope="module")
def impostor() -> World:
    """Another admin and committee: keys the server holds."""
    return World.build()


def _announce_successor(server: HostileServer, successor: SignedRoster) -> None:
    """Serve ``successor`` after the pinned roster and its epoch 1's key generation, as the
    real server does after a roster change; rounds still open under epoch 0."""
    world = server.world
    server.chain = [world.roster, successor]
    server.epochs = [
        epoch_entry(world),
        epoch_entry(world, 1, phase=KeygenPhase.COMMIT, current=False, roster_version=2),
    ]
    server.keygen = KeygenStatus(
        epoch=1, phase=KeygenPhase.COMMIT, commitments={}, public_key_shares=[],
        shamir_shares=[], key_statements=[],
    )  # fmt: skip


def test_an_admin_signed_roster_successor_is_followed(
    server: HostileServer, tmp_path: Path, world: World
) -> None:
    """The control: the admin's successor (same committee, epoch 1) is followed and pinned,
    and each member commits to its epoch 1 key share."""
    agents = _members(server, tmp_path)
    successor = SignedRoster.sign(
        dataclasses.replace(world.roster.roster, version=2, epoch=1), world.admin.sign
    )
    _announce_successor(server, successor)
    _run(agents, times=1)
    assert all(agent.roster == successor for agent in agents)
    assert sorted(server.puts) == [paths.commitment(FED, i) for i in (1, 2, 3)]


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_roster_successor_is_not_followed(
    server: HostileServer, tmp_path: Path, world: World, impostor: World, forgery: str
) -> None:
    """The server serves a successor that gives seat 3 to a key it holds, announces the key
    generation of its epoch 1, and asks an honest round of epoch 0. Members refuse the
    chain: no key generation message, no endorsement, no share, the pin unchanged."""
    agents = _members(server, tmp_path)
    _announce_successor(server, forged_successor(world, impostor, forgery, seats=(3,)))
    for agent in agents:
        with pytest.raises(ProtocolError, match=FORGERIES[forgery]):
            agent.follow_rosters()
    server.honest_round(1, CLIENTS[:3])
    _attack(f"roster successor: {forgery}", server, agents, 1, 1)
    assert server.puts == [] and server.endorsed == []
    for index, agent in enumerate(agents, start=1):
        assert agent.roster == world.roster
        assert pin_roster(tmp_path / f"member-{index}", FED, None) == world.roster


# ---- key epochs: an epoch the member holds no key of ----------------------------------------


def test_a_request_under_an_epoch_never_generated(
    server: HostileServer, tmp_path: Path, world: World
) -> None:
    """The server lists epoch 1 as current and asks round 1 under it, endorsed by members 2
    and 3 (colluding); member 1 never took part in epoch 1's key generation."""
    agent = _members(server, tmp_path)[0]
    server.epochs = [epoch_entry(world, current=False), epoch_entry(world, 1)]
    server.honest_round(1, CLIENTS[:3])
    request = _changed(server.requests[1], epoch=1)
    forged = {m: world.endorsement(m, request) for m in (2, 3)}
    server.requests[1] = _changed(request, endorsements=forged)
    _attack("an epoch never generated", server, [agent], 1, 1)
    assert server.endorsed == []
    assert agent.held_epochs() == [0]
    assert "holds no key of epoch 1" in agent.decide(world.config, server.shown(1, 1)).reason
    assert not agent.handle(world.config, server.shown(1, 1))  # past the agent's early exits
    assert server.shares == []


def test_a_request_under_an_epoch_whose_key_was_destroyed(
    server: HostileServer, tmp_path: Path, world: World
) -> None:
    """The server lists epoch 0 retired (epoch 1 current), so members destroy its key
    shares; then it asks an honest round of epoch 0, which all three would endorse."""
    agents = _members(server, tmp_path)
    server.epochs = [epoch_entry(world, current=False, retired=True), epoch_entry(world, 1)]
    _run(agents, times=1)
    assert all(a.held_epochs() == [] and 0 in a.ledger().destroyed for a in agents)
    server.honest_round(1, CLIENTS[:3])
    _attack("an epoch whose key was destroyed", server, agents, 1, 1)
    assert server.endorsed == []
    assert not agents[0].handle(world.config, server.shown(1, 1))
    assert server.shares == []


# ---- across the upgrade to endorsements ------------------------------------------------------


@pytest.fixture(scope="module")
def five() -> World:
    """n=5, t=3: q = 4, so a quorum needs members beyond the t who decrypted a round."""
    return World.build(members=5, threshold=3)


def _old_code_round(server: HostileServer, tmp_path: Path) -> DecryptionRequest:
    """Round 1, uploaded an hour ago and decrypted then, under the code before endorsements,
    for {c1, c2, c3} by {1, 2, 3}: member 3's ledger pins that set (the share pinned it);
    members 4 and 5 never saw the round. Every folder is as that code's DKG left it."""
    server.honest_round(1, CLIENTS[:3], at=int(time.time()) - 3600)
    full = server.requests[1]
    secrets, folder = server.world.committee.members[2], tmp_path / "member-3"
    folder.mkdir(parents=True)
    ledger = Ledger(folder, ledger_key(secrets.identity, FED), FED)
    pin = Pin(upload_set_digest(full.uploads), full.aggregate_sha256, len(full.uploads))
    ledger.record_share(1, 1, pin)
    return full


def test_a_round_decrypted_before_endorsements_relisted_with_a_subset(
    five: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After the upgrade the server shows round 1 decrypting again for {c1, c2}, with the
    endorsements of members 1 and 2, who collude with it. Without the floor, members 4 and 5
    (no pin) endorse too: {1, 2, 4, 5} is a quorum, {1, 2, 4} decrypts, and the difference
    of the two results is c3's update. With it, 3, 4 and 5 refuse: the uploads predate
    their upgrade."""
    server = HostileServer(five)
    full = _old_code_round(server, tmp_path)
    honest = [server.member(i, tmp_path / f"member-{i}", legacy=True) for i in (3, 4, 5)]
    subset = [server.blobs[(1, c)] for c in CLIENTS[:2]]
    relisted = _changed(
        full,
        attempt=2,
        decryption_set=[1, 2, 4],
        uploads=full.uploads[:2],
        aggregate_sha256=five.aggregate_digest(subset, 1),
    )
    forged = {m: five.endorsement(m, relisted) for m in (1, 2)}
    server.requests[1] = _changed(relisted, endorsements=forged)
    server.views[(5, 1)] = _changed(server.requests[1], decryption_set=[1, 2, 5])
    with caplog.at_level(logging.WARNING, logger="he_agg.member"):
        _attack("pre-endorsement round, re-listed with a subset", server, honest, 1, 2)
    assert server.endorsed == []  # no honest member endorsed the subset
    reasons = [(getattr(r, "member", 0), str(getattr(r, "reason", ""))) for r in caplog.records]
    assert {m for m, reason in reasons if "upgrade floor" in reason} == {3, 4, 5}


def test_upgraded_members_decrypt_rounds_uploaded_after_the_upgrade(
    five: World, tmp_path: Path
) -> None:
    """The control: the same members, floors set, get a new round's shares out."""
    server = HostileServer(five)
    agents = [server.member(i, tmp_path / f"member-{i}", legacy=True) for i in range(1, 6)]
    server.honest_round(2, CLIENTS[:3])
    _run(agents)
    assert sorted(server.shares) == [(2, 1, 1), (2, 1, 2), (2, 1, 3)]
    assert all(agent.ledger().floor is not None for agent in agents)


# ---- a client colluding with the server: uploads that would extract the key (issue 10) ------


@pytest.fixture(scope="module")
def proven_world() -> World:
    return World.build(proofs=True)


@pytest.fixture
def proven_server(proven_world: World) -> HostileServer:
    """Serves the honest collective key: members check uploads' proofs against it."""
    key = proven_world.public_key()
    return HostileServer(proven_world, public_key=key, statements=proven_world.statements(key))


def test_an_honest_proven_round_gets_its_shares(
    proven_server: HostileServer, tmp_path: Path
) -> None:
    """The control: with proofs required, members verify every upload's proofs and share."""
    proven_server.honest_round(1, CLIENTS[:3])
    _run(_members(proven_server, tmp_path))
    assert sorted(proven_server.shares) == [(1, 1, 1), (1, 1, 2)]


def _extraction_upload(server: HostileServer, kind: str) -> None:
    """bank-3 (colluding) replaces its first c1 by a constant C = 2^40, or by the negation of
    bank-1's (so the aggregate's c1 loses bank-1's), re-proves with randomness of its own,
    signs the result; the server lists it with the true sum."""
    world = server.world
    params = world.params
    request = server.requests[1]
    original = decode_upload(server.blobs[(1, "bank-3")], params)
    words = original.words.copy()
    for j, q in enumerate(params.data_primes):
        if kind == "constant":
            words[0, 1, j] = np.uint64((1 << 40) % q)  # a constant is flat in NTT form
        else:
            other = decode_upload(server.blobs[(1, "bank-1")], params).words[0, 1, j]
            words[0, 1, j] = (np.uint64(q) - other) % np.uint64(q)
    context = ProofContext(params.fingerprint, FED, 0, 1, "bank-3", world.roster.roster.digest)
    witness = sample_witness(words.shape[0], params)
    proofs = prove_upload(words, witness, key_rows(world.committee.public), params, context)
    forged = encode_upload(dataclasses.replace(original, words=words, proofs=proofs), params)
    record = request.uploads[2]
    blob, signed = world.signed("bank-3", 1, forged, record.manifest)
    server.blobs[(1, "bank-3")] = blob
    blobs = [server.blobs[(1, c)] for c in CLIENTS[:3]]
    server.requests[1] = _changed(
        request,
        uploads=[*request.uploads[:2], signed],
        aggregate_sha256=world.aggregate_digest(blobs, 1),
    )


@pytest.mark.parametrize("kind", ["constant", "cancelling"])
def test_a_colluding_clients_key_extraction_upload(
    proven_server: HostileServer, tmp_path: Path, kind: str
) -> None:
    proven_server.honest_round(1, CLIENTS[:3])
    _extraction_upload(proven_server, kind)
    request = proven_server.requests[1]
    agents = _members(proven_server, tmp_path)
    _attack(f"key extraction upload ({kind} c1)", proven_server, agents, 1, request.attempt)
    shown = agents[0].decryption_request(1)  # with the quorum of endorsements it gathered
    decision = agents[0].decide(agents[0].config(), shown)
    assert not decision.accepted and "bank-3" in decision.reason
    assert "not proven well formed" in decision.reason


ATTACKS = 26  # the tests above that call _attack (the parametrised ones count 3, 5, 2 and 2)


def test_no_attack_released_a_share() -> None:
    assert len(RELEASED) == ATTACKS, sorted(RELEASED)
    assert sum(RELEASED.values()) == 0
