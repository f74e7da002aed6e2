"""A hostile aggregator against a real participant: it serves a key of its own, or one
whose second half is not the CRS, or a configuration that is not the pinned roster.
In each case the participant encrypts nothing and uploads nothing."""

from __future__ import annotations

import dataclasses

import httpx
import numpy as np
import pytest

from clients.participant import Participant
from he_agg.errors import ProtocolError
from he_agg.seal_codec import ciphertext_from_bytes, ciphertext_to_bytes
from keys import keygen
from tests.adversarial.double import BASE, CLIENTS, FED, HostileServer, World


@pytest.fixture(scope="module")
def world() -> World:
    return World.build()


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


def _submit(server: HostileServer) -> None:
    update = {"w": np.ones(8, dtype=np.float32)}
    with pytest.raises(ProtocolError) as refused:
        _participant(server).submit(update, 10.0, round=1)
    assert server.uploads == [], "the participant uploaded under a key it should refuse"
    return refused.value  # type: ignore[return-value]


def test_the_honest_key_is_used(world: World) -> None:
    """The control: with the members' statements, the participant uploads."""
    server = HostileServer(world)
    server.public_key = world.public_key()
    server.statements = world.statements(server.public_key)
    _participant(server).submit({"w": np.ones(8, dtype=np.float32)}, 10.0, round=1)
    assert server.uploads == [(1, CLIENTS[0])]


def test_a_key_the_members_did_not_sign(world: World) -> None:
    """The server's own key pair; the members' statements are about the real key."""
    server = HostileServer(world)
    params, crs = world.params, world.committee.crs
    secret = keygen.gen_secret_share(params, 1)
    share = keygen.gen_public_key_share(secret, crs, params)
    own = keygen.public_key(keygen.aggregate_public_key_shares([share], params), crs, params)
    server.public_key = ciphertext_to_bytes(own)
    server.statements = world.statements(world.public_key())
    assert "signed another public key" in str(_submit(server))


def test_a_key_the_server_had_signed_by_itself(world: World) -> None:
    """Statements for the server's key, signed with keys that are not the roster's."""
    server = HostileServer(world)
    impostor = World.build()  # another committee: valid signatures, wrong signers
    server.public_key = impostor.public_key()
    server.statements = impostor.statements(server.public_key)
    _submit(server)


def test_a_key_whose_second_half_is_not_the_crs(world: World) -> None:
    server = HostileServer(world)
    key = ciphertext_from_bytes(world.public_key())
    data = key.data.copy()
    data[1] = data[0]  # any polynomial but the CRS, with every member's statement
    server.public_key = ciphertext_to_bytes(dataclasses.replace(key, data=data))
    server.statements = world.statements(server.public_key)
    assert "not the federation's CRS" in str(_submit(server))


def test_a_configuration_that_is_not_the_pinned_roster(world: World) -> None:
    server = HostileServer(world)
    server.public_key = world.public_key()
    server.statements = world.statements(server.public_key)
    server.config = world.config.model_copy(update={"k_min": 1})
    assert "k_min differs" in str(_submit(server))
