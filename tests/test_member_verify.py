"""The member's pure verify, without a server: a real committee, real signed uploads, and a
decryption request built the way the aggregator builds it, then one hostile change per test.

The aggregator may lie: besides tampering with one request, it may ask the same round again
with another upload set (the measured break: attempt 3 listed a subset, and two published
results gave away the missing client's update), for another key epoch, or with more clients
than the parameter set's noise bounds cover. A member also decrypts only a set that a quorum
of q = ⌈(n + t)/2⌉ members endorsed (here n=3, t=2: all three): the request's endorsements
are checked against the pinned roster."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
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
from he_agg.api.roster_check import roster_for
from he_agg.api.states import RoundState
from he_agg.api.transport import SignedClient
from he_agg.combine import average_from_shares
from he_agg.endorsement import Endorsement
from he_agg.envelope import AGGREGATE_CLIENT, Upload, decode_upload, encode_upload
from he_agg.packing import flatten
from he_agg.params import ParameterSet, derive_parameters
from he_agg.request_signing import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    canonical_request,
)
from he_agg.roster import Roster
from keys.committee import CommitteeSetup, run_committee_setup
from keys.decrypt import decryption_share
from keys.identity import Identity
from keys.ledger import LedgerState, Pin
from keys.presum import Presum
from keys.verify import (
    UPGRADE_SKEW_SECONDS,
    Decision,
    UploadSource,
    enrolled_keys,
    upload_set_digest,
    verified_upload,
    verify,
)

FED = "verify-fed"
CLIENTS = ("bank-1", "bank-2", "bank-3", "bank-4")  # bank-4 is enrolled but does not upload
ROUND = 1
MEMBER = 1
EMPTY_LEDGER = LedgerState()
EVERY_MEMBER = (1, 2, 3)  # q = ⌈(3 + 2)/2⌉ = 3 of the 3 members


@dataclass(frozen=True)
class Parties:
    """The committee and the clients, able to make and sign uploads."""

    params: ParameterSet
    committee: CommitteeSetup
    clients: dict[str, Identity]
    updates: dict[str, tuple[dict[str, np.ndarray], int]]
    manifests: dict[str, str]

    def upload(
        self, client: str, round: int = ROUND, federation: str = FED, epoch: int = 0
    ) -> bytes:
        update, samples = self.updates[client]
        blob, _ = prepare_upload(
            update,
            samples,
            self.committee.public,
            federation=federation,
            round=round,
            client=client,
            epoch=epoch,
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
        at: int | None = None,
    ) -> UploadRecord:
        """What the server stores for an upload: the client's signed PUT of ``blob``, signed
        now or, with ``at``, as if at that time."""
        signed_for = signed_for or paths.update(FED, ROUND, client)
        manifest = self.manifests[client]
        key = self.clients[signer or client].signing
        digest = hashlib.sha256(blob).hexdigest()
        if at is None:
            with SignedClient("http://unused.invalid", key) as sdk:
                headers = sdk.headers("PUT", signed_for, blob, manifest)
            timestamp, nonce = int(headers[HEADER_TIMESTAMP]), headers[HEADER_NONCE]
            signature = headers[HEADER_SIGNATURE]
        else:  # what SignedClient.headers signs, at another time
            timestamp, nonce = at, secrets.token_hex(16)
            message = canonical_request("PUT", signed_for, digest, at, nonce, manifest, len(blob))
            signature = key.sign(message).hex()
        return UploadRecord(
            client=client,
            sha256=digest,
            size=len(blob),
            signature=signature,
            timestamp=timestamp,
            nonce=nonce,
            target=target or signed_for,
            manifest=manifest,
        )


@dataclass(frozen=True)
class Setup(Parties):
    """…plus the federation's config and round 1 as the aggregator would ask for it."""

    config: FederationCreate
    blobs: dict[str, bytes]
    request: DecryptionRequest
    roster: Roster

    def endorsement(
        self,
        uploads: list[UploadRecord],
        member: int,
        *,
        signer: int | None = None,
        federation: str = FED,
        epoch: int = 0,
        round: int = ROUND,
    ) -> str:
        """Member ``member``'s endorsement of this upload list, signed by ``signer``'s key
        (default: its own)."""
        digest = bytes.fromhex(upload_set_digest(uploads))
        statement = Endorsement(federation, epoch, round, digest, member)
        key = self.committee.members[(signer or member) - 1].identity
        return statement.signed(key.sign).to_bytes().decode()

    def endorsed(
        self, request: DecryptionRequest, members: tuple[int, ...] = EVERY_MEMBER
    ) -> DecryptionRequest:
        """``request`` carrying these members' endorsements of its own upload list."""
        bodies = {
            m: self.endorsement(request.uploads, m, epoch=request.epoch, round=request.round)
            for m in members
        }
        return request.model_copy(update={"endorsements": bodies})


def _update(seed: int) -> tuple[dict[str, np.ndarray], int]:
    rng = np.random.default_rng(seed)
    update = {"layer.weight": rng.uniform(-1, 1, (6, 5)).astype(np.float32)}
    return update, int(rng.integers(10, 50))


def digest_of_sum(blobs: list[bytes], params: ParameterSet, epoch: int = 0) -> str:
    uploads = (decode_upload(b, params) for b in blobs)
    return hashlib.sha256(aggregate_envelope(uploads, params, FED, ROUND, epoch)).hexdigest()


def build_setup() -> Setup:
    """A committee of 3 (t=2), four enrolled clients, and round 1 with three uploads."""
    params = derive_parameters(
        "member-verify", k_max=8, committee_max=3, value_bits=12, proofs=False
    )
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
        aggregate_sha256=digest_of_sum(list(blobs.values()), params),
        uploads=[parties.record(name, blob) for name, blob in blobs.items()],
    )
    roster = roster_for(config, Identity.generate(0).public.signing_key.hex())
    setup = Setup(params, committee, clients, updates, manifests, config, blobs, request, roster)
    return dataclasses.replace(setup, request=setup.endorsed(request))


@pytest.fixture(scope="module")
def setup() -> Setup:
    return build_setup()


def _verify(
    setup: Setup,
    request: DecryptionRequest | None = None,
    *,
    ledger: LedgerState = EMPTY_LEDGER,
    member: int = MEMBER,
    blobs: dict[str, bytes] | None = None,
    upload_blob: UploadSource | None = None,
    config: FederationCreate | None = None,
    epoch: int = 0,
    endorsed_by: tuple[int, ...] | None = EVERY_MEMBER,
) -> Decision:
    """verify(); the request re-endorsed by ``endorsed_by`` for its own upload list (so a
    test changes one thing at a time), or, with None, carrying the endorsements it has."""
    source = upload_blob or {**setup.blobs, **(blobs or {})}.__getitem__
    request = request or setup.request
    if endorsed_by is not None:
        request = setup.endorsed(request, endorsed_by)
    return verify(
        request,
        config or setup.config,
        ledger,
        member,
        FED,
        source,
        epoch=epoch,
        roster=setup.roster,
    )


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
    ledger = _pinned_by(setup, setup.request, attempt=2)
    assert _verify(setup, _with(setup, attempt=3), ledger=ledger).accepted


def test_refuses_another_attempt_of_a_round_shared_before_pinning(setup: Setup) -> None:
    """A legacy ledger counted the round's share but not its upload set: never again."""
    ledger = LedgerState(shares=((ROUND, 2),))
    decision = _verify(setup, _with(setup, attempt=3), ledger=ledger)
    _refused(decision, f"round {ROUND} had a share released before upload sets were pinned")
    other_round = LedgerState(shares=((ROUND + 1, 1),))
    assert _verify(setup, ledger=other_round).accepted  # only that round is affected


def test_refuses_once_tau_is_spent(setup: Setup) -> None:
    tau = setup.params.tau
    spent = LedgerState(shares=tuple((100 + r, 1) for r in range(tau)))
    _refused(_verify(setup, ledger=spent), f"τ={tau} is spent")
    one_left = LedgerState(shares=spent.shares[1:])
    assert _verify(setup, ledger=one_left).accepted


def test_refuses_an_upload_signed_before_the_upgrade_floor(setup: Setup) -> None:
    """A member that joined before endorsements has a floor (keys.ledger): an upload signed
    more than the clock skew before it may belong to a round decrypted then."""
    earliest = min(u.timestamp for u in setup.request.uploads)
    floor = earliest + UPGRADE_SKEW_SECONDS + 1
    _refused(_verify(setup, ledger=LedgerState(floor=floor)), f"upgrade floor {floor}")
    at_the_edge = LedgerState(floor=earliest + UPGRADE_SKEW_SECONDS)
    assert _verify(setup, ledger=at_the_edge).accepted
    assert _verify(setup, ledger=LedgerState(floor=earliest - 3600)).accepted


# ---- the key epoch --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "held"), [(1, 0), (0, 1)], ids=["later-epoch", "earlier-epoch"]
)
def test_refuses_a_request_for_an_epoch_this_member_holds_no_keys_for(
    setup: Setup, requested: int, held: int
) -> None:
    request = _with(setup, epoch=requested)
    decision = _verify(setup, request, epoch=held)
    _refused(decision, f"key epoch {requested}", f"the key of epoch {held}")
    if requested == 0:
        assert _verify(setup, request, epoch=requested).accepted  # the epoch was the only fault
    else:  # the uploads' envelopes name epoch 0: a request cannot re-label them (format 2)
        _refused(_verify(setup, request, epoch=requested), "key epoch is 0, expected 1")


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
    digest = digest_of_sum([setup.blobs[u.client] for u in two], setup.params)
    _refused(_verify(setup, _with(setup, uploads=two, aggregate_sha256=digest)), "K_min is 3")


def _with_k_max(setup: Setup, k_max: int) -> FederationCreate:
    """The federation's config on a parameter set with this K_max (K_min stays the
    roster's 3: the config gives only the parameter set)."""
    params = derive_parameters(
        "member-verify", k_max=k_max, committee_max=3, value_bits=12, proofs=False
    )
    return setup.config.model_copy(update={"parameters": params.to_dict()})


def test_refuses_more_clients_than_k_max(setup: Setup) -> None:
    """Three uploads, K_max 2: the flooding noise was sized for at most two."""
    fetched: list[str] = []

    def upload_blob(client: str) -> bytes:
        fetched.append(client)
        return setup.blobs[client]

    config = _with_k_max(setup, 2)
    decision = _verify(setup, config=config, upload_blob=upload_blob)
    _refused(decision, "3 clients", "K_max=2")
    assert fetched == []  # refused from the list alone


def test_k_max_clients_are_not_too_many(setup: Setup) -> None:
    # K_max 3 and 3 uploads: not refused for the count (the uploads, made for another
    # parameter set, are refused later, for what they are)
    decision = _verify(setup, config=_with_k_max(setup, 3))
    assert not decision.accepted and "K_max" not in decision.reason
    assert "not a valid envelope" in decision.reason


# ---- one upload set per round ----------------------------------------------------------


def _pinned_by(
    setup: Setup,
    request: DecryptionRequest,
    attempt: int = 1,
    upload_blob: UploadSource | None = None,
) -> LedgerState:
    """The ledger after this member released a share for ``request`` at ``attempt``."""
    changed = request.model_copy(update={"attempt": attempt, "decryption_set": [1, 2]})
    decision = _verify(setup, changed, upload_blob=upload_blob)
    assert decision.accepted and decision.pin is not None, decision.reason
    return LedgerState().with_share(ROUND, attempt, decision.pin)


def _relisted(setup: Setup, clients: dict[str, bytes]) -> tuple[DecryptionRequest, UploadSource]:
    """Round 1 asked again (attempt 2), listing these uploads, honestly summed and signed."""
    request = _with(
        setup,
        attempt=2,
        decryption_set=[1, 3],
        uploads=[setup.record(name, blob) for name, blob in clients.items()],
        aggregate_sha256=digest_of_sum(list(clients.values()), setup.params),
    )
    return request, clients.__getitem__


@pytest.fixture(scope="module")
def other_blobs(setup: Setup) -> dict[str, bytes]:
    """bank-4's upload, and a second, different upload that bank-3 signed for round 1."""
    second = setup.updates["bank-3"][0]["layer.weight"] * 0.5
    blob, _ = prepare_upload(
        {"layer.weight": second},
        7,
        setup.committee.public,
        federation=FED,
        round=ROUND,
        client="bank-3",
    )
    return {"bank-4": setup.upload("bank-4"), "bank-3-again": blob}


@pytest.mark.parametrize("change", ["subset", "superset", "other-client", "other-body"])
def test_refuses_a_round_asked_again_with_another_upload_set(
    setup: Setup, other_blobs: dict[str, bytes], change: str
) -> None:
    four = {**setup.blobs, "bank-4": other_blobs["bank-4"]}
    pinned_clients = four if change == "subset" else dict(setup.blobs)
    pinned_request, pinned_source = _relisted(setup, pinned_clients)
    ledger = _pinned_by(setup, pinned_request, upload_blob=pinned_source)
    pin = ledger.pin(ROUND)
    assert pin is not None and pin.count == len(pinned_clients)
    relisted = {
        "subset": dict(setup.blobs),
        "superset": four,
        "other-client": {**_without(setup.blobs, "bank-3"), "bank-4": other_blobs["bank-4"]},
        "other-body": {**setup.blobs, "bank-3": other_blobs["bank-3-again"]},
    }[change]
    request, source = _relisted(setup, relisted)
    assert _verify(setup, request, upload_blob=source).accepted  # valid but for the pin
    decision = _verify(setup, request, ledger=ledger, upload_blob=source)
    _refused(decision, f"round {ROUND} is pinned to the upload set {pin.uploads[:16]}")
    assert f"({len(pinned_clients)} uploads)" in decision.reason
    assert f"lists another set ({len(relisted)} uploads" in decision.reason


def _without(blobs: dict[str, bytes], client: str) -> dict[str, bytes]:
    return {name: blob for name, blob in blobs.items() if name != client}


def test_accepts_the_pinned_set_again_with_another_decryption_set(setup: Setup) -> None:
    ledger = _pinned_by(setup, setup.request)
    reordered = list(reversed(setup.request.uploads))  # the order is not part of the set
    request = _with(setup, attempt=2, decryption_set=[1, 3], uploads=reordered)
    decision = _verify(setup, request, ledger=ledger)
    assert decision.accepted, decision.reason
    assert decision.pin == ledger.pin(ROUND)
    assert decision.digest is not None
    assert decision.digest.hex() == setup.request.aggregate_sha256


def test_refuses_the_pinned_set_with_another_aggregate_digest(setup: Setup) -> None:
    honest = _pinned_by(setup, setup.request).pin(ROUND)
    assert honest is not None
    other = Pin(honest.uploads, "ab" * 32, honest.count)
    ledger = LedgerState().with_share(ROUND, 1, other)
    decision = _verify(setup, _with(setup, attempt=2), ledger=ledger)
    _refused(decision, f"round {ROUND} is pinned to the aggregate abababab")


def test_the_upload_set_digest_is_the_sorted_client_and_sha256_pairs(setup: Setup) -> None:
    uploads = setup.request.uploads
    digest = upload_set_digest(uploads)
    assert digest == upload_set_digest(reversed(uploads))
    resigned = [setup.record(u.client, setup.blobs[u.client]) for u in uploads]
    assert resigned[0].signature != uploads[0].signature  # fresh nonce and timestamp …
    assert upload_set_digest(resigned) == digest  # … same set
    changed = uploads[0].model_copy(update={"sha256": "00" * 32})
    assert upload_set_digest([changed, *uploads[1:]]) != digest
    renamed = uploads[0].model_copy(update={"client": "bank-4"})
    assert upload_set_digest([renamed, *uploads[1:]]) != digest
    assert upload_set_digest(uploads[:2]) != digest


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
    with pytest.raises(ValueError):
        Decision(False, "refused", pin=Pin("00" * 32, "00" * 32, 3))


def test_an_accepted_decision_carries_the_pin_of_its_upload_list(setup: Setup) -> None:
    decision = _verify(setup)
    assert decision.pin == Pin(
        upload_set_digest(setup.request.uploads),
        setup.request.aggregate_sha256,
        len(setup.request.uploads),
    )


# ---- the quorum of endorsements ------------------------------------------------------------


def _carrying(setup: Setup, bodies: dict[int, str]) -> Decision:
    """verify() on the honest request carrying exactly these endorsements."""
    request = _with(setup, endorsements=bodies)
    return _verify(setup, request, endorsed_by=None)


def _mine(setup: Setup, *members: int) -> dict[int, str]:
    return {m: setup.endorsement(setup.request.uploads, m) for m in members}


def test_a_quorum_of_the_pinned_roster_is_enough(setup: Setup) -> None:
    decision = _carrying(setup, _mine(setup, 1, 2, 3))
    assert decision.accepted, decision.reason


@pytest.mark.parametrize("members", [(1, 2), (2, 3), (1,), ()], ids=str)
def test_one_short_of_a_quorum_is_refused(setup: Setup, members: tuple[int, ...]) -> None:
    """n=3, t=2: q=3; two members (a decryption set) are not enough to fix the set."""
    decision = _carrying(setup, _mine(setup, *members))
    _refused(decision, f"endorsed by {len(members)} members {sorted(members)}", "q=3 of n=3")


def test_endorsements_of_another_upload_set_do_not_count(setup: Setup) -> None:
    subset = setup.request.uploads[:2]  # what the members endorsed: another set
    other = {m: setup.endorsement(subset, m) for m in EVERY_MEMBER}
    _refused(_carrying(setup, other), "endorsed by 0 members []")
    mixed = {**other, 3: setup.endorsement(setup.request.uploads, 3)}
    _refused(_carrying(setup, mixed), "endorsed by 1 members [3]")


@pytest.mark.parametrize(
    ("federation", "epoch", "round"),
    [("other-fed", 0, ROUND), (FED, 1, ROUND), (FED, 0, ROUND + 1)],
    ids=["federation", "epoch", "round"],
)
def test_endorsements_of_another_round_epoch_or_federation_do_not_count(
    setup: Setup, federation: str, epoch: int, round: int
) -> None:
    bodies = _mine(setup, 1, 2)
    bodies[3] = setup.endorsement(
        setup.request.uploads, 3, federation=federation, epoch=epoch, round=round
    )
    _refused(_carrying(setup, bodies), "endorsed by 2 members [1, 2]")


def test_a_forged_endorsement_does_not_count(setup: Setup) -> None:
    """Member 3's endorsement, signed with member 2's key (a corrupt member can do that)."""
    bodies = {**_mine(setup, 1, 2), 3: setup.endorsement(setup.request.uploads, 3, signer=2)}
    _refused(_carrying(setup, bodies), "endorsed by 2 members [1, 2]")
    garbled = {**_mine(setup, 1, 2), 3: "not an endorsement"}
    _refused(_carrying(setup, garbled), "endorsed by 2 members [1, 2]")


def test_the_same_member_counts_once(setup: Setup) -> None:
    """Member 2's endorsement handed out under two indices still counts once."""
    two = _mine(setup, 1, 2)
    bodies = {**two, 3: two[2]}
    _refused(_carrying(setup, bodies), "endorsed by 2 members [1, 2]")


def test_a_signer_outside_the_pinned_roster_does_not_count(setup: Setup) -> None:
    stranger = Identity.generate(9)
    statement = Endorsement(
        FED, 0, ROUND, bytes.fromhex(upload_set_digest(setup.request.uploads)), 9
    ).signed(stranger.sign)
    bodies = {**_mine(setup, 1, 2), 9: statement.to_bytes().decode()}
    _refused(_carrying(setup, bodies), "endorsed by 2 members [1, 2]")
    # … nor does a member of the served config that the pinned roster lacks
    smaller = dataclasses.replace(setup.roster, members=setup.roster.members[:2])
    decision = verify(
        _with(setup, endorsements=_mine(setup, 1, 2, 3)),
        setup.config,
        EMPTY_LEDGER,
        MEMBER,
        FED,
        setup.blobs.__getitem__,
        epoch=0,
        roster=smaller,
    )
    assert decision.accepted  # n=2, t=2 → q=2: members 1 and 2; member 3 is not counted
    decision = verify(
        _with(setup, endorsements=_mine(setup, 1, 3)),
        setup.config,
        EMPTY_LEDGER,
        MEMBER,
        FED,
        setup.blobs.__getitem__,
        epoch=0,
        roster=smaller,
    )
    _refused(decision, "endorsed by 1 members [1]", "q=2 of n=2")


def test_the_quorum_is_checked_after_the_pin(setup: Setup) -> None:
    """A set this member pinned otherwise is refused for the pin, even with a quorum."""
    ledger = LedgerState().with_pin(ROUND, Pin("00" * 32, setup.request.aggregate_sha256, 3))
    decision = _verify(setup, ledger=ledger)
    _refused(decision, f"round {ROUND} is pinned to the upload set 0000000000000000")


def test_an_endorsement_pin_lets_the_same_set_be_decrypted(setup: Setup) -> None:
    """The pin an endorsement records (no share yet) is the set the share is for."""
    pin = Pin(
        upload_set_digest(setup.request.uploads),
        setup.request.aggregate_sha256,
        len(setup.request.uploads),
    )
    ledger = LedgerState().with_pin(ROUND, pin)
    assert ledger.spent == 0
    decision = _verify(setup, ledger=ledger)
    assert decision.accepted and decision.pin == pin


# ---- a sum kept while the round was open (keys.presum) ------------------------------------


def _presum(setup: Setup, clients: tuple[str, ...], round: int = ROUND) -> Presum:
    """A member's sum of ``clients``' uploads, each verified as it arrived."""
    presum = Presum(setup.params, round, 0)
    keys = enrolled_keys(setup.roster)
    for record in setup.request.uploads:
        if record.client in clients:
            blob = setup.blobs[record.client]
            upload = verified_upload(
                record, keys[record.client], blob, setup.params, FED, round, 0, None, setup.roster
            )
            presum.add(record, upload)
    return presum


def _verify_with(
    setup: Setup, presum: Presum, source: UploadSource, request: DecryptionRequest | None = None
) -> Decision:
    return verify(
        setup.endorsed(request or setup.request),
        setup.config,
        EMPTY_LEDGER,
        MEMBER,
        FED,
        source,
        epoch=0,
        roster=setup.roster,
        presum=presum,
    )


def _counting(setup: Setup, fetched: list[str]) -> UploadSource:
    def upload_blob(client: str) -> bytes:
        fetched.append(client)
        return setup.blobs[client]

    return upload_blob


def test_a_presum_is_completed_with_only_the_uploads_it_lacks(setup: Setup) -> None:
    fetched: list[str] = []
    decision = _verify_with(setup, _presum(setup, CLIENTS[:2]), _counting(setup, fetched))
    assert decision.accepted, decision.reason
    assert fetched == [CLIENTS[2]]  # the two summed while the round was open are not fetched
    assert decision.digest is not None
    assert decision.digest.hex() == setup.request.aggregate_sha256
    reference = _verify(setup)
    assert decision.aggregate is not None and reference.aggregate is not None
    assert np.array_equal(decision.aggregate.words, reference.aggregate.words)


def test_a_presum_with_an_upload_the_list_lacks_is_not_used(setup: Setup) -> None:
    """The server swapped a client's upload after the member summed it (another sha256
    listed), or dropped it from the list: the member sums the listed uploads afresh."""
    swapped = setup.request.uploads[0].model_copy(update={"sha256": "ab" * 32})
    presum = _presum(setup, CLIENTS[:2])
    presum.included[swapped.client] = swapped.sha256
    fetched: list[str] = []
    decision = _verify_with(setup, presum, _counting(setup, fetched))
    assert decision.accepted, decision.reason
    assert fetched == [u.client for u in setup.request.uploads]  # all of them, afresh
    dropped = setup.request.model_copy(update={"uploads": setup.request.uploads[1:]})
    assert not _presum(setup, CLIENTS[:1]).usable_for(dropped)


def test_a_presum_of_another_round_or_epoch_is_not_used(setup: Setup) -> None:
    presum = _presum(setup, CLIENTS[:3])
    assert presum.usable_for(setup.request)
    for other in (Presum(setup.params, ROUND + 1, 0), Presum(setup.params, ROUND, 1)):
        other.included, other.running = presum.included, presum.running
        assert not other.usable_for(setup.request)


def test_a_presum_does_not_hide_a_bad_upload_it_lacks(setup: Setup) -> None:
    """The uploads added at decryption time get every check: a blob that is not the one
    recorded is refused even though the others came from the sum."""
    blobs = {**setup.blobs, CLIENTS[2]: setup.blobs[CLIENTS[1]]}
    decision = _verify_with(setup, _presum(setup, CLIENTS[:2]), blobs.__getitem__)
    _refused(decision, "sha256 does not match")


def test_a_presum_sum_that_is_wrong_is_caught_by_the_announced_digest(setup: Setup) -> None:
    """Even a member's own sum is checked: the aggregate must have the announced sha256."""
    presum = _presum(setup, CLIENTS[:2])
    assert presum.running is not None
    presum.running.add(decode_upload(setup.blobs[CLIENTS[0]], setup.params).words)  # twice
    _refused(_verify_with(setup, presum, setup.blobs.__getitem__), "not the sum")
