"""A hostile aggregator against a real participant: it serves a key of its own, or one
whose second half is not the CRS, or a configuration that is not the pinned roster, or
a roster successor the admin did not sign (or one that breaks the identity rules) with a
key of its own for the successor's epoch. In each case the participant encrypts nothing
and uploads nothing."""

from __future__ import annotations

import dataclasses

import httpx
import numpy as np
import pytest

from clients.participant import Participant
from he_agg.errors import ProtocolError
from he_agg.key_statement import KeyStatement, verify_collective_key
from he_agg.roster import SignedRoster
from he_agg.seal_codec import ciphertext_from_bytes, ciphertext_to_bytes
from keys import keygen
from tests.adversarial.double import (
    BASE,
    CLIENTS,
    FED,
    FORGERIES,
    HostileServer,
    World,
    epoch_entry,
    forged_successor,
)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build()


@pytest.fixture(scope="module")
def impostor() -> World:
    """Another admin and committee: keys the server holds."""
    return World.build()


def _server(world: World) -> HostileServer:
    """A server with round 1 open under epoch 0."""
    return HostileServer(world, opened={1})


def _participant(server: HostileServer) -> Participant:
    identity = server.world.clients[CLIENTS[0]]
    return Participant(
        BASE,
        FED,
        CLIENTS[0],
        identity.signing,
        transport=httpx.MockTransport(server),
        show_progress=False,
        roster=server.world.roster,
    )


def _submit(server: HostileServer, participant: Participant | None = None) -> ProtocolError:
    update = {"w": np.ones(8, dtype=np.float32)}
    with pytest.raises(ProtocolError) as refused:
        (participant or _participant(server)).submit(update, 10.0, round=1)
    assert server.uploads == [], "the participant uploaded under a key it should refuse"
    return refused.value


def test_the_honest_key_is_used(world: World) -> None:
    """The control: with the members' statements, the participant uploads."""
    server = _server(world)
    server.public_key = world.public_key()
    server.statements = world.statements(server.public_key)
    _participant(server).submit({"w": np.ones(8, dtype=np.float32)}, 10.0, round=1)
    assert server.uploads == [(1, CLIENTS[0])]


def test_a_key_the_members_did_not_sign(world: World) -> None:
    """The server's own key pair; the members' statements are about the real key."""
    server = _server(world)
    params, crs = world.params, world.committee.crs
    secret = keygen.gen_secret_share(params, 1)
    share = keygen.gen_public_key_share(secret, crs, params)
    own = keygen.public_key(keygen.aggregate_public_key_shares([share], params), crs, params)
    server.public_key = ciphertext_to_bytes(own)
    server.statements = world.statements(world.public_key())
    assert "signed another public key" in str(_submit(server))


def test_a_key_the_server_had_signed_by_itself(world: World) -> None:
    """Statements for the server's key, signed with keys that are not the roster's."""
    server = _server(world)
    impostor = World.build()  # another committee: valid signatures, wrong signers
    server.public_key = impostor.public_key()
    server.statements = impostor.statements(server.public_key)
    _submit(server)


def test_a_key_whose_second_half_is_not_the_crs(world: World) -> None:
    server = _server(world)
    key = ciphertext_from_bytes(world.public_key())
    data = key.data.copy()
    data[1] = data[0]  # any polynomial but the CRS, with every member's statement
    server.public_key = ciphertext_to_bytes(dataclasses.replace(key, data=data))
    server.statements = world.statements(server.public_key)
    assert "not the federation's CRS" in str(_submit(server))


def test_a_configuration_that_is_not_the_pinned_roster(world: World) -> None:
    server = _server(world)
    server.public_key = world.public_key()
    server.statements = world.statements(server.public_key)
    server.config = world.config.model_copy(update={"k_min": 1})
    assert "k_min differs" in str(_submit(server))


def _successor_epoch(
    server: HostileServer, successor: SignedRoster, key: bytes, signer: World
) -> None:
    """Serve ``successor`` after the pinned roster, its epoch 1 current, and ``key`` as
    epoch 1's key with ``signer``'s committee's statements under ``successor``."""
    server.chain = [server.world.roster, successor]
    server.epochs = [
        epoch_entry(server.world, current=False),
        epoch_entry(server.world, 1, roster_version=2),
    ]
    server.epoch_keys = {1: (key, signer.statements(key, successor.roster))}


def test_an_admin_signed_roster_successor_is_followed(world: World) -> None:
    """The control: the admin's successor (same committee, epoch 1) is followed, and the
    upload is encrypted under epoch 1's key, which every member signed for it."""
    server = _server(world)
    successor = SignedRoster.sign(
        dataclasses.replace(world.roster.roster, version=2, epoch=1), world.admin.sign
    )
    _successor_epoch(server, successor, world.public_key(), world)
    participant = _participant(server)
    participant.submit({"w": np.ones(8, dtype=np.float32)}, 10.0, round=1)
    assert server.uploads == [(1, CLIENTS[0])]
    assert participant.signed_roster == successor


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_roster_successor_is_not_followed(
    world: World, impostor: World, forgery: str
) -> None:
    """The server hands the whole committee to keys it holds in a roster successor, says
    its epoch 1 is current, and serves epoch 1's key signed by that committee: only the
    chain check stands between the client and a key whose secret the server knows."""
    server = _server(world)
    successor = forged_successor(world, impostor, forgery, seats=(1, 2, 3))
    key = impostor.public_key()
    _successor_epoch(server, successor, key, impostor)
    served = {i: KeyStatement.from_bytes(t) for i, t in server.epoch_keys[1][1].items()}
    verify_collective_key(key, served, successor.roster, world.params, 1)  # would pass
    participant = _participant(server)
    assert FORGERIES[forgery] in str(_submit(server, participant))
    assert participant.signed_roster == world.roster
