"""The server's side of endorsements (``Publisher.accept_endorsement``), on both stores: it
keeps a member's signed endorsement of the upload set it lists, refuses anything else with
a clear 4xx, takes the same endorsement again, and hands the stored ones out with the
decryption request. (Members check every signature themselves; these checks keep garbage
out of the store.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from he_agg.api.models import FederationCreate, MemberIn, PartyIn
from he_agg.api.roster_check import roster_for
from he_agg.api.states import PartyRole, RoundState
from he_agg.endorsement import Endorsement, upload_set_digest
from he_agg.errors import ServiceError
from he_agg.params import DEFAULT
from he_agg.roster import SignedRoster
from he_agg.server.federations import Federation
from he_agg.server.publishing import Publisher
from he_agg.server.store import (
    EpochRow,
    FederationRow,
    FileBlobStore,
    PartyRow,
    SqlStore,
    Store,
    UploadRow,
)
from keys.identity import Identity

FED = "pub-fed"
MEMBERS = {i: Identity.generate(i) for i in (1, 2, 3)}
ADMIN = Identity.generate(0)
CLIENTS = ("bank-1", "bank-2")


def _config() -> FederationCreate:
    """The creation body with its admin-signed roster, which governs epoch 0."""
    body = FederationCreate(
        id=FED,
        parameters=DEFAULT.to_dict(),
        threshold=2,
        k_min=2,
        clients=[PartyIn(name=c, signing_key=f"{i + 1:064x}") for i, c in enumerate(CLIENTS)],
        members=[
            MemberIn(
                name=f"m{i}",
                index=i,
                signing_key=m.public.signing_key.hex(),
                encryption_key=m.public.encryption_key.hex(),
            )
            for i, m in MEMBERS.items()
        ],
    )
    roster = SignedRoster.sign(roster_for(body, ADMIN.public.signing_key.hex()), ADMIN.sign)
    return body.model_copy(update={"roster": roster.to_json()})


def _upload(client: str, number: int) -> UploadRow:
    return UploadRow(
        FED, number, client, f"{CLIENTS.index(client) + 10:064x}", 10, "00" * 64, 1, "n",
        f"/v1/federations/{FED}/rounds/{number}/updates/{client}", "{}", 1.0,
    )  # fmt: skip


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = SqlStore(database_url)
    config = _config()
    parties = [
        PartyRow(FED, m.name, PartyRole.MEMBER, m.signing_key, m.encryption_key, m.index)
        for m in config.members
    ]
    assert config.roster is not None
    opened.insert_federation(
        FederationRow(FED, config.model_dump(mode="json"), 1.0),
        parties,
        EpochRow(FED, 0, config.roster, 1.0),
    )
    for state in (RoundState.DECRYPTING, RoundState.OPEN):
        row = opened.insert_round(FED, 2.0, 1.0)
        for client in CLIENTS:
            opened.insert_upload(_upload(client, row.number))
        if state == RoundState.DECRYPTING:
            opened.save_round(
                dataclasses.replace(
                    row, state=state, aggregate="aa" * 32, attempt=1, decryption_set=(1, 2)
                )
            )
    yield opened
    opened.close()


@pytest.fixture
def publisher(store: Store, tmp_path: Path) -> Publisher:
    return Publisher(store, FileBlobStore(tmp_path / "blobs"))


@pytest.fixture
def federation(store: Store) -> Federation:
    row = store.federation(FED)
    assert row is not None
    return Federation(row, tuple(store.epochs(FED)))


def _listed(store: Store, number: int = 1) -> bytes:
    return bytes.fromhex(upload_set_digest(store.uploads(FED, number)))


def _body(
    upload_set: bytes,
    member: int = 1,
    *,
    signer: int | None = None,
    federation: str = FED,
    epoch: int = 0,
    round: int = 1,
) -> bytes:
    statement = Endorsement(federation, epoch, round, upload_set, member)
    return statement.signed(MEMBERS[signer or member].sign).to_bytes()


def _status(call: Callable[[], None]) -> int:
    with pytest.raises(ServiceError) as caught:
        call()
    return caught.value.status


def test_a_valid_endorsement_is_stored_and_handed_out(
    publisher: Publisher, federation: Federation, store: Store
) -> None:
    assert publisher.decryption_request(federation, 1).endorsements == {}
    for member in (2, 1):
        publisher.accept_endorsement(federation, 1, member, _body(_listed(store), member))
    served = publisher.decryption_request(federation, 1).endorsements
    assert sorted(served) == [1, 2]
    assert Endorsement.from_bytes(served[1]) == Endorsement.from_bytes(_body(_listed(store)))
    assert store.endorsements(FED, 1)[2][0] == _listed(store).hex()


def test_the_same_endorsement_again_is_taken_another_is_409(
    publisher: Publisher, federation: Federation, store: Store
) -> None:
    body = _body(_listed(store))
    publisher.accept_endorsement(federation, 1, 1, body)
    publisher.accept_endorsement(federation, 1, 1, body)  # a retry: no error
    other = _body(bytes(32))
    assert _status(lambda: publisher.accept_endorsement(federation, 1, 1, other)) == 409
    assert list(store.endorsements(FED, 1)) == [1]


def test_a_round_that_is_not_decrypting_takes_none(
    publisher: Publisher, federation: Federation, store: Store
) -> None:
    body = _body(_listed(store, 2), round=2)
    assert _status(lambda: publisher.accept_endorsement(federation, 2, 1, body)) == 409
    assert store.endorsements(FED, 2) == {}


@pytest.mark.parametrize(
    "kind",
    ["junk", "other-member", "other-round", "other-federation", "other-epoch", "other-set",
     "forged"],
)  # fmt: skip
def test_anything_but_this_members_endorsement_of_the_listed_set_is_422(
    publisher: Publisher, federation: Federation, store: Store, kind: str
) -> None:
    listed = _listed(store)
    body = {
        "junk": b"not json",
        "other-member": _body(listed, 2),
        "other-round": _body(listed, round=2),
        "other-federation": _body(listed, federation="elsewhere"),
        "other-epoch": _body(listed, epoch=1),
        "other-set": _body(bytes(32)),
        "forged": _body(listed, signer=3),
    }[kind]
    assert _status(lambda: publisher.accept_endorsement(federation, 1, 1, body)) == 422
    assert store.endorsements(FED, 1) == {}
