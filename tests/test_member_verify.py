"""The member's pure verify, without a server: a real committee, real signed uploads, and a
decryption request built the way the aggregator builds it, then one hostile change per test."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pytest

from clients.upload import prepare_upload
from he_agg.aggregate import aggregate_envelope
from he_agg.api import paths
from he_agg.api.models import (
    DecryptionRequest,
    FederationCreate,
    MemberIn,
    PartyIn,
    UploadRecord,
)
from he_agg.api.states import RoundState
from he_agg.api.transport import SignedClient
from he_agg.combine import average_from_shares
from he_agg.envelope import AGGREGATE_CLIENT, Upload, decode_upload, encode_upload
from he_agg.packing import flatten
from he_agg.params import ParameterSet, derive_parameters
from he_agg.request_signing import HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP
from keys.committee import CommitteeSetup, run_committee_setup
from keys.decrypt import decryption_share
from keys.identity import Identity
from keys.ledger import LedgerState
from keys.verify import Decision, UploadSource, verify

FED = "verify-fed"
CLIENTS = ("bank-1", "bank-2", "bank-3", "bank-4")  # bank-4 is enrolled but does not upload
ROUND = 1
MEMBER = 1
EMPTY_LEDGER = LedgerState()


@dataclass(frozen=True)
class Parties:
    """The committee and the clients, able to make and sign uploads."""

    params: ParameterSet
    committee: CommitteeSetup
    clients: dict[str, Identity]
    updates: dict[str, tuple[dict[str, np.ndarray], int]]
    manifests: dict[str, str]

    def upload(self, client: str, round: int = ROUND, federation: str = FED) -> bytes:
        update, samples = self.updates[client]
        blob, _ = prepare_upload(
            update,
            samples,
            self.committee.public,
            federation=federation,
            round=round,
            client=client,
        )
        return blob

    def record(
        self,
        client: str,
        blob: bytes,
        *,
        signed_for: str | None = None,
        target: str | None = None,
        signer: str | None = None,
    ) -> UploadRecord:
        """What the server stores for an upload: the client's signed PUT of ``blob``."""
        signed_for = signed_for or paths.update(FED, ROUND, client)
        manifest = self.manifests[client]
        key = self.clients[signer or client].signing
        with SignedClient("http://unused.invalid", key) as sdk:
            headers = sdk.headers("PUT", signed_for, blob, manifest)
        return UploadRecord(
            client=client,
            sha256=hashlib.sha256(blob).hexdigest(),
            size=len(blob),
            signature=headers[HEADER_SIGNATURE],
            timestamp=int(headers[HEADER_TIMESTAMP]),
            nonce=headers[HEADER_NONCE],
            target=target or signed_for,
            manifest=manifest,
        )


@dataclass(frozen=True)
class Setup(Parties):
    """…plus the federation's config and round 1 as the aggregator would ask for it."""

    config: FederationCreate
    blobs: dict[str, bytes]
    request: DecryptionRequest


def _update(seed: int) -> tuple[dict[str, np.ndarray], int]:
    rng = np.random.default_rng(seed)
    update = {"layer.weight": rng.uniform(-1, 1, (6, 5)).astype(np.float32)}
    return update, int(rng.integers(10, 50))


def _digest_of_sum(blobs: list[bytes], params: ParameterSet) -> str:
    uploads = (decode_upload(b, params) for b in blobs)
    return hashlib.sha256(aggregate_envelope(uploads, params, FED, ROUND)).hexdigest()


@pytest.fixture(scope="module")
def setup() -> Setup:
    params = derive_parameters("member-verify", k_max=8, committee_max=3, value_bits=12)
    committee = run_committee_setup(params, FED, members=3, threshold=2)
    clients = {name: Identity.generate(0) for name in (*CLIENTS, "intruder")}
    config = FederationCreate(
        id=FED,
        parameters=params.to_dict(),
        threshold=2,
        k_min=3,
        clients=[PartyIn(name=n, signing_key=clients[n].public.signing_key.hex()) for n in CLIENTS],
        members=[
            MemberIn(
                name=f"member-{m.identity.index}",
                index=m.identity.index,
                signing_key=m.identity.public.signing_key.hex(),
                encryption_key=m.identity.public.encryption_key.hex(),
            )
            for m in committee.members
        ],
    )
    updates = {name: _update(seed) for seed, name in enumerate((*CLIENTS, "intruder"))}
    manifests = {name: flatten(u)[1].to_header() for name, (u, _) in updates.items()}
    parties = Parties(params, committee, clients, updates, manifests)
    blobs = {name: parties.upload(name) for name in CLIENTS[:3]}
    request = DecryptionRequest(
        round=ROUND,
        state=RoundState.DECRYPTING,
        attempt=1,
        decryption_set=[1, 2],
        aggregate_sha256=_digest_of_sum(list(blobs.values()), params),
        uploads=[parties.record(name, blob) for name, blob in blobs.items()],
    )
    return Setup(params, committee, clients, updates, manifests, config, blobs, request)


def _verify(
    setup: Setup,
    request: DecryptionRequest | None = None,
    *,
    ledger: LedgerState = EMPTY_LEDGER,
    member: int = MEMBER,
    blobs: dict[str, bytes] | None = None,
    upload_blob: UploadSource | None = None,
) -> Decision:
    source = upload_blob or {**setup.blobs, **(blobs or {})}.__getitem__
    return verify(request or setup.request, setup.config, ledger, member, FED, source)


def _refused(decision: Decision, *reason: str) -> None:
    assert decision.accepted is False
    assert decision.aggregate is None and decision.digest is None
    for words in reason:
        assert words in decision.reason


def _with(setup: Setup, **changes: object) -> DecryptionRequest:
    return setup.request.model_copy(update=changes)


# ---- the honest request --------------------------------------------------------------


def test_accepts_the_honest_request_with_the_announced_aggregate(setup: Setup) -> None:
    decision = _verify(setup)
    assert decision.accepted is True
    assert decision.digest is not None and decision.aggregate is not None
    assert decision.digest.hex() == setup.request.aggregate_sha256
    uploads = [decode_upload(b, setup.params) for b in setup.blobs.values()]
    expected = decode_upload(aggregate_envelope(uploads, setup.params, FED, ROUND), setup.params)
    assert np.array_equal(decision.aggregate.words, expected.words)
    assert decision.aggregate.client == AGGREGATE_CLIENT


def test_fetches_each_upload_once_in_list_order(setup: Setup) -> None:
    fetched: list[str] = []

    def upload_blob(client: str) -> bytes:
        fetched.append(client)
        return setup.blobs[client]

    assert _verify(setup, upload_blob=upload_blob).accepted
    assert fetched == [u.client for u in setup.request.uploads]


def test_accepted_aggregate_decrypts_to_the_weighted_average(setup: Setup) -> None:
    decision = _verify(setup)
    assert decision.aggregate is not None and decision.digest is not None
    words = decision.aggregate.words
    shares = [
        decryption_share(m.threshold_share, words[:, 1], (1, 2), setup.params, decision.digest)
        for m in setup.committee.members[:2]
    ]
    size = flatten(setup.updates[CLIENTS[0]][0])[1].size
    average = average_from_shares(words[:, 0], shares, setup.params, size)
    vectors = [flatten(setup.updates[c][0])[0] for c in setup.blobs]
    weights = [setup.updates[c][1] for c in setup.blobs]
    assert np.allclose(average, np.average(vectors, axis=0, weights=weights), atol=1e-3)


# ---- the round and the decryption set ------------------------------------------------


def test_refuses_a_round_that_is_not_decrypting(setup: Setup) -> None:
    _refused(_verify(setup, _with(setup, state=RoundState.PUBLISHED)), "not asking this member")


def test_refuses_when_this_member_is_not_in_the_set(setup: Setup) -> None:
    _refused(_verify(setup, member=3), "not asking this member")


@pytest.mark.parametrize(
    "named",
    [[1], [1, 2, 3], [1, 1], [1, 2, 2], [1, 9]],
    ids=["too-few", "too-many", "duplicate", "duplicate-extra", "unenrolled-member"],
)
def test_refuses_a_set_that_is_not_t_distinct_enrolled_members(
    setup: Setup, named: list[int]
) -> None:
    _refused(_verify(setup, _with(setup, decryption_set=named)), "is not t=2 distinct enrolled")


# ---- the ledger ----------------------------------------------------------------------


def test_refuses_a_round_already_completed(setup: Setup) -> None:
    ledger = LedgerState(shares=((ROUND, 1),), completed=(ROUND,))
    _refused(_verify(setup, _with(setup, attempt=5), ledger=ledger), "already decrypted")


@pytest.mark.parametrize("attempt", [2, 1], ids=["repeated", "older"])
def test_refuses_a_repeated_or_older_attempt(setup: Setup, attempt: int) -> None:
    ledger = LedgerState(shares=((ROUND, 2),))
    _refused(_verify(setup, _with(setup, attempt=attempt), ledger=ledger), "not a new attempt")


def test_accepts_a_newer_attempt(setup: Setup) -> None:
    ledger = LedgerState(shares=((ROUND, 2),))
    assert _verify(setup, _with(setup, attempt=3), ledger=ledger).accepted


def test_refuses_once_tau_is_spent(setup: Setup) -> None:
    tau = setup.params.tau
    spent = LedgerState(shares=tuple((100 + r, 1) for r in range(tau)))
    _refused(_verify(setup, ledger=spent), f"τ={tau} is spent")
    one_left = LedgerState(shares=spent.shares[1:])
    assert _verify(setup, ledger=one_left).accepted


# ---- the upload list -----------------------------------------------------------------


def test_refuses_a_client_listed_twice(setup: Setup) -> None:
    uploads = [*setup.request.uploads, setup.request.uploads[0]]
    _refused(_verify(setup, _with(setup, uploads=uploads)), "'bank-1' twice")


def test_refuses_a_client_not_enrolled(setup: Setup) -> None:
    blob = setup.upload("intruder")
    uploads = [*setup.request.uploads, setup.record("intruder", blob)]
    decision = _verify(setup, _with(setup, uploads=uploads), blobs={"intruder": blob})
    _refused(decision, "'intruder'", "not an enrolled client")


def test_refuses_fewer_than_k_min_clients(setup: Setup) -> None:
    two = setup.request.uploads[:2]
    digest = _digest_of_sum([setup.blobs[u.client] for u in two], setup.params)
    _refused(_verify(setup, _with(setup, uploads=two, aggregate_sha256=digest)), "K_min is 3")


# ---- each upload ---------------------------------------------------------------------


def test_refuses_a_blob_that_is_not_the_recorded_one(setup: Setup) -> None:
    tampered = bytearray(setup.blobs["bank-2"])
    tampered[-1] ^= 1
    decision = _verify(setup, blobs={"bank-2": bytes(tampered)})
    _refused(decision, "'bank-2'", "sha256 does not match")


@pytest.mark.parametrize(
    "signed_for",
    [paths.update(FED, ROUND + 1, "bank-1"), paths.update("other-fed", ROUND, "bank-1")],
    ids=["another-round", "another-federation"],
)
def test_refuses_an_upload_signed_for_another_target(setup: Setup, signed_for: str) -> None:
    record = setup.record("bank-1", setup.blobs["bank-1"], signed_for=signed_for)
    uploads = [record, *setup.request.uploads[1:]]
    _refused(_verify(setup, _with(setup, uploads=uploads)), "'bank-1' was signed for")


def test_refuses_a_record_whose_target_was_rewritten(setup: Setup) -> None:
    """The server claims the right target, but the client signed another round's."""
    record = setup.record(
        "bank-1",
        setup.blobs["bank-1"],
        signed_for=paths.update(FED, ROUND + 1, "bank-1"),
        target=paths.update(FED, ROUND, "bank-1"),
    )
    uploads = [record, *setup.request.uploads[1:]]
    _refused(_verify(setup, _with(setup, uploads=uploads)), "'bank-1' is not signed by it")


def test_refuses_an_upload_signed_by_another_client(setup: Setup) -> None:
    record = setup.record("bank-1", setup.blobs["bank-1"], signer="bank-2")
    uploads = [record, *setup.request.uploads[1:]]
    fetched: list[str] = []

    def upload_blob(client: str) -> bytes:
        fetched.append(client)
        return setup.blobs[client]

    decision = _verify(setup, _with(setup, uploads=uploads), upload_blob=upload_blob)
    _refused(decision, "'bank-1' is not signed by it")
    assert fetched == ["bank-1"]  # streamed: nothing after the bad upload is fetched


def test_refuses_a_signature_that_is_not_hex(setup: Setup) -> None:
    record = setup.request.uploads[0].model_copy(update={"signature": "zz" * 64})
    uploads = [record, *setup.request.uploads[1:]]
    _refused(_verify(setup, _with(setup, uploads=uploads)), "'bank-1' is not signed by it")


@pytest.mark.parametrize("kind", ["other-round-envelope", "truncated"])
def test_refuses_a_signed_blob_that_is_not_an_envelope_for_this_round(
    setup: Setup, kind: str
) -> None:
    """Even the client's own signature does not make a wrong envelope acceptable."""
    if kind == "truncated":
        blob = setup.blobs["bank-1"][:-100]
    else:
        blob = setup.upload("bank-1", round=ROUND + 1)
    uploads = [setup.record("bank-1", blob), *setup.request.uploads[1:]]
    decision = _verify(setup, _with(setup, uploads=uploads), blobs={"bank-1": blob})
    _refused(decision, "'bank-1' is not a valid envelope for this round")


# ---- the aggregate -------------------------------------------------------------------


def test_refuses_an_aggregate_with_one_word_changed(setup: Setup) -> None:
    uploads = [decode_upload(b, setup.params) for b in setup.blobs.values()]
    honest = decode_upload(aggregate_envelope(uploads, setup.params, FED, ROUND), setup.params)
    words = honest.words.copy()
    q = setup.params.data_primes[0]
    words[0, 0, 0, 0] = (int(words[0, 0, 0, 0]) + 1) % q
    forged = encode_upload(Upload(FED, ROUND, AGGREGATE_CLIENT, honest.scale, words), setup.params)
    digest = hashlib.sha256(forged).hexdigest()
    _refused(_verify(setup, _with(setup, aggregate_sha256=digest)), "not the sum")


def test_refuses_one_clients_upload_as_the_aggregate(setup: Setup) -> None:
    digest = hashlib.sha256(setup.blobs["bank-1"]).hexdigest()
    _refused(_verify(setup, _with(setup, aggregate_sha256=digest)), "not the sum")


# ---- the decision ----------------------------------------------------------------------


def test_a_decision_is_accepted_exactly_when_it_carries_an_aggregate() -> None:
    assert Decision.refuse("no").accepted is False
    with pytest.raises(ValueError):
        Decision(True, "accepted but empty")
    with pytest.raises(ValueError):
        Decision(False, "refused", digest=b"\0" * 32)
