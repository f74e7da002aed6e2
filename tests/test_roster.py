"""The roster and the key statements: what a client checks before it encrypts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clients.harness import federation_spec
from he_agg.api.roster_check import roster_for, roster_mismatch
from he_agg.errors import ProtocolError, SignatureError
from he_agg.key_statement import KeyStatement, key_digest, verify_collective_key
from he_agg.params import ParameterSet, derive_parameters
from he_agg.roster import Roster, SignedRoster
from he_agg.seal_codec import ciphertext_to_bytes
from keys import keygen
from keys.committee import CommitteeSetup, run_committee_setup
from keys.identity import Identity

FED = "roster-test"


@pytest.fixture(scope="module")
def small() -> ParameterSet:
    return derive_parameters("roster-test", k_max=4, committee_max=3, value_bits=12, proofs=False)


@pytest.fixture(scope="module")
def setup(small: ParameterSet) -> CommitteeSetup:
    return run_committee_setup(small, FED, members=3, threshold=2)


@pytest.fixture(scope="module")
def admin() -> Identity:
    return Identity.generate(0)


@pytest.fixture(scope="module")
def signed(setup: CommitteeSetup, admin: Identity, small: ParameterSet) -> SignedRoster:
    clients = {f"bank-{i}": Identity.generate(0).public for i in (1, 2)}
    members = [m.identity.public for m in setup.members]
    spec = federation_spec(FED, clients, members, params=small, threshold=2, k_min=2)
    roster = roster_for(spec, admin.public.signing_key.hex())
    return SignedRoster.sign(roster, admin.sign)


def _statements(
    setup: CommitteeSetup, roster: Roster, public_key: bytes
) -> dict[int, KeyStatement]:
    return {
        m.identity.index: KeyStatement(
            FED, roster.epoch, m.identity.index, roster.digest, key_digest(public_key)
        ).signed(m.identity.sign)
        for m in setup.members
    }


def test_signed_roster_round_trips_and_verifies(signed: SignedRoster) -> None:
    again = SignedRoster.from_json(signed.to_json())
    assert again == signed and again.verify() == signed.roster


def test_any_change_to_a_roster_breaks_its_signature(signed: SignedRoster) -> None:
    for change in ({"threshold": 1}, {"k_min": 1}, {"version": 2}, {"epoch": 1}):
        forged = SignedRoster(dataclasses.replace(signed.roster, **change), signed.signature)
        with pytest.raises(SignatureError):
            forged.verify()
    extra = (*signed.roster.clients, dataclasses.replace(signed.roster.clients[0], name="x"))
    with pytest.raises(SignatureError):
        SignedRoster(dataclasses.replace(signed.roster, clients=extra), signed.signature).verify()


def test_fingerprint_is_short_stable_and_changes_with_the_roster(signed: SignedRoster) -> None:
    fingerprint = signed.roster.fingerprint
    assert len(fingerprint.split("-")) == 6 and all(len(g) == 4 for g in fingerprint.split("-"))
    assert fingerprint == SignedRoster.from_json(signed.to_json()).roster.fingerprint
    assert dataclasses.replace(signed.roster, k_min=1).fingerprint != fingerprint


def test_successor_rules(signed: SignedRoster, admin: Identity) -> None:
    newer = SignedRoster.sign(dataclasses.replace(signed.roster, version=2, epoch=1), admin.sign)
    assert newer.check_successor_of(signed).version == 2
    with pytest.raises(ProtocolError, match="does not follow"):
        signed.check_successor_of(newer)  # going back
    other_admin = Identity.generate(0)
    hijack = dataclasses.replace(
        signed.roster, version=3, admin_key=other_admin.public.signing_key.hex()
    )
    with pytest.raises(ProtocolError, match="another admin"):
        SignedRoster.sign(hijack, other_admin.sign).check_successor_of(signed)


def test_config_must_match_the_roster(signed: SignedRoster, setup: CommitteeSetup) -> None:
    roster = signed.roster
    clients = {c.name: Identity.generate(0).public for c in roster.clients}
    members = [m.identity.public for m in setup.members]
    spec = federation_spec(FED, clients, members, params=setup.params, threshold=2, k_min=2)
    assert roster_mismatch(spec, roster) == "the enrolled clients differ from the pinned roster"
    fewer = federation_spec(FED, clients, members[:2], params=setup.params, threshold=2, k_min=2)
    assert roster_mismatch(fewer, roster) is not None


def test_the_honest_key_is_accepted(setup: CommitteeSetup, signed: SignedRoster) -> None:
    public_key = ciphertext_to_bytes(setup.public.public_key)
    statements = _statements(setup, signed.roster, public_key)
    context = verify_collective_key(public_key, statements, signed.roster, setup.params)
    assert np.array_equal(context.public_key.data, setup.public.public_key.data)


def test_a_key_the_members_did_not_sign_is_refused(
    setup: CommitteeSetup, signed: SignedRoster
) -> None:
    """The server's own key pair (it would decrypt every upload alone) has no statements."""
    honest = ciphertext_to_bytes(setup.public.public_key)
    statements = _statements(setup, signed.roster, honest)
    own_secret = keygen.gen_secret_share(setup.params, 1)
    share = keygen.gen_public_key_share(own_secret, setup.crs, setup.params)
    aggregate = keygen.aggregate_public_key_shares([share], setup.params)
    servers_key = ciphertext_to_bytes(keygen.public_key(aggregate, setup.crs, setup.params))
    with pytest.raises(ProtocolError, match="signed another public key"):
        verify_collective_key(servers_key, statements, signed.roster, setup.params)


def test_one_missing_or_forged_statement_is_enough_to_refuse(
    setup: CommitteeSetup, signed: SignedRoster
) -> None:
    public_key = ciphertext_to_bytes(setup.public.public_key)
    statements = _statements(setup, signed.roster, public_key)
    missing = {k: v for k, v in statements.items() if k != 2}
    with pytest.raises(ProtocolError, match=r"member 2 .* has not signed"):
        verify_collective_key(public_key, missing, signed.roster, setup.params)
    forged = dict(statements)
    forged[3] = dataclasses.replace(statements[3], signature=statements[2].signature)
    with pytest.raises(ProtocolError, match="bad signature"):
        verify_collective_key(public_key, forged, signed.roster, setup.params)
    other_roster = dataclasses.replace(signed.roster, version=9)
    with pytest.raises(ProtocolError, match="another roster"):
        verify_collective_key(
            public_key, _statements(setup, other_roster, public_key), signed.roster, setup.params
        )


def test_a_key_whose_second_half_is_not_the_crs_is_refused(
    setup: CommitteeSetup, signed: SignedRoster
) -> None:
    """Even signed by every member: the client recomputes a itself."""
    key = setup.public.public_key
    shifted = key.data.copy()
    shifted[1, :, 0] = (shifted[1, :, 0] + 1) % np.array(
        [*setup.params.data_primes, setup.params.special_prime], dtype=np.uint64
    )
    tampered = ciphertext_to_bytes(dataclasses.replace(key, data=shifted))
    statements = _statements(setup, signed.roster, tampered)
    with pytest.raises(ProtocolError, match="not the federation's CRS"):
        verify_collective_key(tampered, statements, signed.roster, setup.params)


def test_another_parameter_set_is_refused(setup: CommitteeSetup, signed: SignedRoster) -> None:
    public_key = ciphertext_to_bytes(setup.public.public_key)
    statements = _statements(setup, signed.roster, public_key)
    other = derive_parameters("other", k_max=4, committee_max=3, value_bits=11, proofs=False)
    with pytest.raises(ProtocolError, match="parameter set"):
        verify_collective_key(public_key, statements, signed.roster, other)
