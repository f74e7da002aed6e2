"""A hostile aggregator during key generation, against a real member agent.

The server tries to get members to vouch for a key whose secret it knows: commitments
and reveals of its own making in the members' names, another share shown as a member's
own, a reveal that does not match its commitment, commitments changed after they were
pinned. The member must sign no key statement and deal no Shamir share in each case.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from he_agg.api import paths
from he_agg.api.models import FederationOut, KeygenStatus
from he_agg.api.states import KeygenPhase
from he_agg.api.transport import SignedClient
from he_agg.collective_key import commitment_message
from he_agg.crs import common_reference_polynomial
from he_agg.errors import ProtocolError
from he_agg.seal_codec import ciphertext_to_bytes
from keys import keygen
from keys.agent import MemberAgent
from keys.commitments import check_commitments
from keys.identity import Identity
from tests.adversarial.double import (
    BASE,
    FED,
    PASSPHRASE,
    World,
    epoch_entry,
    listed,
    requested_epoch,
)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build()


@dataclass
class KeygenDouble:
    """Serves a key generation the test scripts, in epoch 0 under the admin's one roster;
    records what the member sends."""

    world: World
    status: KeygenStatus
    shares: dict[int, bytes] = field(default_factory=dict)
    public_key: bytes = b""
    puts: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "PUT":
            self.puts.append(path)
            return httpx.Response(204)
        if path == paths.federation(FED):
            out = FederationOut(
                id=FED, config=self.world.config, epoch=0, keygen_phase=self.status.phase,
                public_key_ready=bool(self.public_key), decryptions_used=0,
            )  # fmt: skip
            return httpx.Response(200, content=out.model_dump_json())
        if path == paths.rosters(FED):
            return listed([self.world.roster.to_json()])
        if path == paths.epochs(FED):
            key_ready = bool(self.public_key)
            return listed([epoch_entry(self.world, phase=self.status.phase, key_ready=key_ready)])
        if path == paths.keygen(FED):
            return httpx.Response(200, content=self.status.model_dump_json())
        if path == paths.public_key(FED) and requested_epoch(request) in (None, 0):
            return httpx.Response(200, content=self.public_key)
        for index, blob in self.shares.items():
            if path == paths.public_key_share(FED, index):
                return httpx.Response(200, content=blob)
        return httpx.Response(404, json={"detail": "not served"})

    def vouched(self) -> bool:
        """Did the member sign a key statement or deal a Shamir share?"""
        return any("/statements/" in p or "/shamir-shares/" in p for p in self.puts)


def _agent(double: KeygenDouble, folder: Path, index: int = 1) -> MemberAgent:
    identity = double.world.committee.members[index - 1].identity
    client = SignedClient(BASE, identity.signing, transport=httpx.MockTransport(double), retries=0)
    return MemberAgent(client, FED, identity, folder, PASSPHRASE, roster=double.world.roster)


def _step(agent: MemberAgent, times: int = 3) -> None:
    for _ in range(times):
        with contextlib.suppress(Exception):  # the agent's loop logs and goes on
            agent.step()


def _servers_own_key(world: World) -> tuple[dict[int, bytes], dict[int, str], bytes]:
    """p'_i for every member from secrets the server chose, their commitments, and K."""
    params, crs = world.params, common_reference_polynomial(world.params, FED)
    shares = {
        m.index: keygen.gen_public_key_share(keygen.gen_secret_share(params, m.index), crs, params)
        for m in world.roster.roster.members
    }
    commitments = {
        i: keygen.commit(s, params, FED, 0).hex() + ":" + "00" * 64 for i, s in shares.items()
    }
    aggregate = keygen.aggregate_public_key_shares(list(shares.values()), params)
    key = ciphertext_to_bytes(keygen.public_key(aggregate, crs, params))
    return {i: s.to_bytes(params) for i, s in shares.items()}, commitments, key


def _status(commitments: dict[int, str], phase: KeygenPhase = KeygenPhase.DEAL) -> KeygenStatus:
    return KeygenStatus(
        epoch=0, phase=phase, commitments=commitments, public_key_shares=sorted(commitments),
        shamir_shares=[], key_statements=[],
    )  # fmt: skip


def test_commitments_the_members_did_not_sign(world: World, tmp_path: Path) -> None:
    """The reviewer's attack: the server's own p'_i, commitments and K in the members' names."""
    shares, commitments, key = _servers_own_key(world)
    double = KeygenDouble(world, _status(commitments), shares, key)
    _step(_agent(double, tmp_path))
    assert not double.vouched()
    assert paths.public_key_share(FED, 1) not in double.puts  # nothing revealed either


def _honest_commitments(world: World, own_share: bytes) -> tuple[dict[int, str], dict[int, bytes]]:
    """Signed commitments of members 2 and 3 (honest, relayed) and of member 1's real share."""
    params, crs = world.params, common_reference_polynomial(world.params, FED)
    digest = world.roster.roster.digest
    shares = {1: keygen.PublicKeyShare.from_bytes(own_share, params)}
    for member in world.committee.members[1:]:
        index = member.identity.index
        shares[index] = keygen.gen_public_key_share(member.secret, crs, params)
    commitments = {}
    for index, share in shares.items():
        commitment = keygen.commit(share, params, FED, 0)
        signer: Identity = world.committee.members[index - 1].identity
        signature = signer.sign(commitment_message(FED, 0, index, digest, commitment))
        commitments[index] = f"{commitment.hex()}:{signature.hex()}"
    return commitments, {i: s.to_bytes(params) for i, s in shares.items()}


def _member_with_its_share(world: World, folder: Path) -> bytes:
    """Run member 1 up to its commitment so that its own p_1 exists on disk."""
    double = KeygenDouble(world, _status({}, KeygenPhase.COMMIT))
    _step(_agent(double, folder), times=1)
    return (folder / "pk-share.bin").read_bytes()


def test_another_share_shown_as_the_members_own(world: World, tmp_path: Path) -> None:
    own = _member_with_its_share(world, tmp_path)
    commitments, shares = _honest_commitments(world, own)
    servers, _, key = _servers_own_key(world)
    shares[1] = servers[1]  # not the p_1 this member made
    double = KeygenDouble(world, _status(commitments), shares, key)
    _step(_agent(double, tmp_path))
    assert not double.vouched()


def test_a_reveal_that_does_not_match_its_commitment(world: World, tmp_path: Path) -> None:
    own = _member_with_its_share(world, tmp_path)
    commitments, shares = _honest_commitments(world, own)
    servers, _, _ = _servers_own_key(world)
    shares[3] = servers[3]  # a rogue p_3 chosen after the others were revealed
    params = world.params
    crs = common_reference_polynomial(params, FED)
    rogue = [keygen.PublicKeyShare.from_bytes(shares[i], params) for i in (1, 2, 3)]
    aggregate = keygen.aggregate_public_key_shares(rogue, params)
    key = ciphertext_to_bytes(keygen.public_key(aggregate, crs, params))
    double = KeygenDouble(world, _status(commitments), shares, key)
    _step(_agent(double, tmp_path))
    assert not double.vouched()


def test_commitments_changed_after_they_were_pinned(world: World, tmp_path: Path) -> None:
    own = _member_with_its_share(world, tmp_path)
    commitments, shares = _honest_commitments(world, own)
    double = KeygenDouble(world, _status(commitments, KeygenPhase.REVEAL), shares)
    _step(_agent(double, tmp_path), times=1)  # pins the commitments and reveals p_1
    pinned = json.loads((tmp_path / "commitments.json").read_text())
    assert pinned == {str(k): v for k, v in commitments.items()}
    other, _ = _honest_commitments(world, own)  # member 2 and 3 re-drawn: other commitments
    double.status = _status(other)
    _step(_agent(double, tmp_path))
    assert not double.vouched()


def test_the_honest_dkg_view_is_vouched_for(world: World, tmp_path: Path) -> None:
    """The control: honest, signed commitments and matching reveals get a key statement."""
    own = _member_with_its_share(world, tmp_path)
    commitments, shares = _honest_commitments(world, own)
    params = world.params
    crs = common_reference_polynomial(params, FED)
    parsed = [keygen.PublicKeyShare.from_bytes(shares[i], params) for i in (1, 2, 3)]
    key = keygen.public_key(keygen.aggregate_public_key_shares(parsed, params), crs, params)
    double = KeygenDouble(world, _status(commitments), shares, ciphertext_to_bytes(key))
    _step(_agent(double, tmp_path), times=1)
    assert paths.key_statement(FED, 1) in double.puts


def test_check_commitments_refuses_a_missing_or_extra_member(world: World) -> None:
    roster = world.roster.roster
    with pytest.raises(ProtocolError, match="the roster has"):
        check_commitments({1: "00:00"}, roster, FED, 0, b"", 1)
