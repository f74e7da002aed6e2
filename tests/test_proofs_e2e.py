"""Proofs of well-formed uploads, end to end over HTTP: a real server under uvicorn, the
committee agents in their own processes, clients through the SDK. An honest round with
proofs publishes numpy's FedAvg; the key-extraction uploads of issue 10 (a constant c1,
and a c1 that cancels another client's), a tampered proof and an envelope without proofs
are each refused by the server with a 422 that names what failed, and store nothing.
(That the members refuse such an upload themselves, if a lying server lists it, is
tests/adversarial/test_hostile_server.py::test_a_colluding_clients_key_extraction_upload.)
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from clients.harness.local import LocalFederation
from clients.participant import Participant
from clients.upload import prepare_upload
from he_agg.envelope import decode_upload, encode_upload
from he_agg.errors import ServiceError
from he_agg.packing import Manifest, flatten
from he_agg.params import derive_parameters

CLIENTS = ["bank-a", "bank-b", "bank-c"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    params = derive_parameters("proofs-e2e", k_max=4, committee_max=3, value_bits=12)
    assert params.proofs
    root = tmp_path_factory.mktemp("proofs")
    federation = LocalFederation(root, "proven", CLIENTS, params=params, k_min=2)
    with federation:
        yield federation


def _update(seed: int) -> tuple[dict[str, Any], float]:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(8, 4)), "b": rng.normal(size=4)}, float(rng.integers(5, 50))


def _body(client: Participant, round: int, seed: int) -> tuple[bytes, Manifest]:
    update, samples = _update(seed)
    public = client.fetch_public_context(0)
    roster = client.follow_rosters().roster
    return prepare_upload(
        update,
        samples,
        public,
        federation=client.federation,
        round=round,
        client=client.name,
        epoch=0,
        roster_digest=roster.digest,
    )


def _refused(client: Participant, round: int, body: bytes, manifest: Manifest, words: str) -> None:
    with pytest.raises(ServiceError) as refused:
        client.upload(round, body, manifest)
    assert refused.value.status == 422 and words in str(refused.value)


def test_an_honest_round_with_proofs_publishes_fedavg(fed: LocalFederation) -> None:
    number = fed.admin_api().open_round(fed.federation, deadline_seconds=120).number
    updates = [_update(seed) for seed in range(3)]
    for name, (update, samples) in zip(CLIENTS, updates, strict=True):
        fed.participant(name).submit(update, samples, round=number)
    model = fed.participant(CLIENTS[0]).wait_for_model(number, timeout=180)
    total = sum(n for _, n in updates)
    expected = sum(flatten(u)[0] * n for u, n in updates) / total
    assert fed.params is not None
    assert np.abs(flatten(model)[0] - expected).max() <= fed.params.error_bound(2) * 2 / total


def test_key_extraction_uploads_and_bad_proofs_are_refused(fed: LocalFederation) -> None:
    number = fed.admin_api().open_round(fed.federation, deadline_seconds=120).number
    client = fed.participant(CLIENTS[2])
    honest, manifest = _body(client, number, 7)
    params = client.parameters()
    upload = decode_upload(honest, params)
    other = decode_upload(_body(fed.participant(CLIENTS[0]), number, 8)[0], params)

    constant, cancelling = upload.words.copy(), upload.words.copy()
    for j, q in enumerate(params.data_primes):
        constant[0, 1, j] = np.uint64((1 << 40) % q)  # decrypts to 2^40·s: the whole key
        cancelling[0, 1, j] = (np.uint64(q) - other.words[0, 1, j]) % np.uint64(q)
    for forged in (constant, cancelling):
        body = encode_upload(dataclasses.replace(upload, words=forged), params)
        _refused(client, number, body, manifest, "ciphertexts 0–0: the proof does not verify")

    tampered = bytearray(honest)
    tampered[-5] ^= 0x10  # one bit of the proof's last response
    _refused(client, number, bytes(tampered), manifest, "ciphertexts 0–0")

    unproven = bytearray(honest[: len(honest) - len(upload.proofs[0])])
    struct.pack_into("<H", unproven, 4, 2)  # a format-2 envelope: no proofs section
    _refused(client, number, bytes(unproven), manifest, "carries no proofs")

    assert fed.admin_api().round(fed.federation, number).uploads == []  # nothing stored
    client.upload(number, honest, manifest)  # the honest one is still taken
    assert fed.admin_api().round(fed.federation, number).uploads == [CLIENTS[2]]


def test_proofs_follow_a_key_epoch_switch(fed: LocalFederation) -> None:
    """After a re-key, uploads are proven against epoch 1's key (the proof binds the epoch)
    and the round still publishes FedAvg."""
    target = fed.admin_api().rekey(fed.federation)[-1].epoch
    fed.wait_for_epoch(target, timeout=180)
    number = fed.admin_api().open_round(fed.federation, deadline_seconds=120).number
    assert fed.admin_api().round(fed.federation, number).epoch == target
    updates = [_update(seed) for seed in (20, 21)]
    for name, (update, samples) in zip(CLIENTS[:2], updates, strict=True):
        fed.participant(name).submit(update, samples, round=number)
    fed.admin_api().close_round(fed.federation, number)
    model = fed.participant(CLIENTS[0]).wait_for_model(number, timeout=180)
    total = sum(n for _, n in updates)
    expected = sum(flatten(u)[0] * n for u, n in updates) / total
    assert fed.params is not None
    assert np.abs(flatten(model)[0] - expected).max() <= fed.params.error_bound(2) * 2 / total
