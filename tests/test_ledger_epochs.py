"""Key epochs in the member's ledger and checks: τ is counted per epoch, a destroyed epoch
is never decrypted nor endorsed again, a round's epoch is fixed when it is first pinned,
``epochs`` and ``destroyed`` are MACed (and absent from the file while empty),
:func:`keys.dkg.destroy_epoch` overwrites and removes an epoch's secrets only, and
``verify``/``endorse`` take the committee, t, the clients and K_min from the roster passed,
not from the configuration."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from he_agg.api.models import DecryptionRequest
from he_agg.errors import DecryptionRefused, KeyStoreError
from he_agg.roster import Roster, RosterClient
from keys.dkg import COMMITMENTS_FILE, KEY_STATEMENT_FILE, MEMBER_KEY, destroy_epoch, epoch_dir
from keys.identity import Identity
from keys.ledger import LEDGER_FILE, SEQ_FILE, Ledger, LedgerState, Pin, ledger_key
from keys.verify import Decision, EndorseDecision, endorse, upload_set_digest, verify
from tests.test_member_verify import FED, MEMBER, ROUND, Setup, build_setup, digest_of_sum

ME = Identity.generate(1)
PIN = Pin("11" * 32, "22" * 32, 3)
OTHER_PIN = Pin("33" * 32, "44" * 32, 2)
FORMAT_2_FIELDS = {"format", "federation", "seq", "shares", "completed", "pins", "mac"}


@dataclass(frozen=True)
class Asked:
    """A decryption request and the uploads it lists, by client."""

    request: DecryptionRequest
    blobs: dict[str, bytes]


@pytest.fixture(scope="module")
def setup() -> Setup:
    return build_setup()


@pytest.fixture(scope="module")
def epoch_0(setup: Setup) -> Asked:
    return Asked(setup.request, setup.blobs)


@pytest.fixture(scope="module")
def epoch_1(setup: Setup) -> Asked:
    """Round 1 asked under key epoch 1: the same clients, envelopes naming epoch 1, the
    aggregate built for epoch 1, endorsed by every member for epoch 1."""
    blobs = {name: setup.upload(name, epoch=1) for name in setup.blobs}
    request = setup.request.model_copy(
        update={
            "epoch": 1,
            "uploads": [setup.record(name, blob) for name, blob in blobs.items()],
            "aggregate_sha256": digest_of_sum(list(blobs.values()), setup.params, epoch=1),
        }
    )
    return Asked(setup.endorsed(request), blobs)


def _verify(
    setup: Setup, asked: Asked, ledger: LedgerState, roster: Roster | None = None
) -> Decision:
    """verify() by member 1 holding keys of the request's own epoch."""
    return verify(
        asked.request,
        setup.config,
        ledger,
        MEMBER,
        FED,
        asked.blobs.__getitem__,
        epoch=asked.request.epoch,
        roster=roster or setup.roster,
    )


def _endorse(
    setup: Setup, asked: Asked, ledger: LedgerState, roster: Roster | None = None
) -> EndorseDecision:
    return endorse(
        asked.request,
        setup.config,
        ledger,
        MEMBER,
        FED,
        epoch=asked.request.epoch,
        roster=roster or setup.roster,
    )


def _refused(decision: Decision | EndorseDecision, words: str) -> None:
    assert decision.accepted is False and decision.pin is None
    assert words in decision.reason, decision.reason


def _spent(tau: int, epoch: int) -> LedgerState:
    """τ shares of other rounds (100, 101, …), all in ``epoch``."""
    rounds = range(100, 100 + tau)
    epochs = () if epoch == 0 else tuple((r, epoch) for r in rounds)
    return LedgerState(shares=tuple((r, 1) for r in rounds), epochs=epochs)


def _pin_of(request: DecryptionRequest) -> Pin:
    return Pin(upload_set_digest(request.uploads), request.aggregate_sha256, len(request.uploads))


def _ledger(folder: Path) -> Ledger:
    return Ledger(folder, ledger_key(ME, FED), FED)


def _raw(folder: Path) -> dict[str, object]:
    value = json.loads((folder / LEDGER_FILE).read_bytes())
    assert isinstance(value, dict)
    return value


# ---- the ledger state: per-epoch τ, the round's epoch, destroyed epochs ----------------------


def test_tau_is_counted_in_the_epoch_of_each_round() -> None:
    state = LedgerState(shares=((1, 1), (2, 1), (2, 2), (3, 1)), epochs=((2, 1), (3, 4)))
    assert (state.epoch_of(1), state.epoch_of(2), state.epoch_of(3)) == (0, 1, 4)
    assert state.epoch_of(99) == 0  # no record: epoch 0, as before epochs existed
    assert {e: state.spent_in(e) for e in (0, 1, 2, 4)} == {0: 1, 1: 2, 2: 0, 4: 1}
    assert state.spent == 4  # every share, every epoch


def test_with_epoch_records_a_later_epoch_once_and_never_writes_epoch_0() -> None:
    state = LedgerState().with_epoch(5, 1)
    assert state.epochs == ((5, 1),) and state.epoch_of(5) == 1
    assert state.with_epoch(5, 1) is state
    assert state.with_epoch(6, 0) is state  # epoch 0 is implicit
    assert LedgerState().with_epoch(6, 0) == LedgerState()


@pytest.mark.parametrize("other", [0, 2], ids=["earlier", "later"])
def test_another_epoch_for_a_round_with_a_recorded_epoch_is_refused(other: int) -> None:
    state = LedgerState().with_epoch(5, 1).with_pin(5, PIN)
    with pytest.raises(DecryptionRefused, match=f"round 5 is of key epoch 1, not {other}"):
        state.with_epoch(5, other)


@pytest.mark.parametrize("how", ["endorsed", "shared", "shared-legacy"])
def test_a_round_pinned_or_shared_in_epoch_0_cannot_move_to_another_epoch(how: str) -> None:
    """Epoch 0 is never written, so a round pinned (or shared) without an epoch record is
    of epoch 0 for good: a later request cannot re-label it and spend another budget."""
    state = {
        "endorsed": LedgerState().with_pin(5, PIN),
        "shared": LedgerState().with_share(5, 1, PIN),
        "shared-legacy": LedgerState(shares=((5, 1),)),
    }[how]
    with pytest.raises(DecryptionRefused, match="round 5 is of key epoch 0, not 1"):
        state.with_epoch(5, 1)
    assert state.with_epoch(5, 0) is state


def test_with_destroyed_records_each_epoch_once() -> None:
    state = LedgerState().with_destroyed(0).with_destroyed(2)
    assert state.destroyed == (0, 2)
    assert state.with_destroyed(2) is state


# ---- the ledger file ------------------------------------------------------------------------


def test_a_share_spends_the_budget_of_its_rounds_epoch(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_share(1, 1, PIN)
    ledger.record_share(2, 1, OTHER_PIN, epoch=1)
    ledger.record_share(2, 2, OTHER_PIN, epoch=1)
    reopened = _ledger(tmp_path).load()
    assert reopened.epochs == ((2, 1),)
    assert (reopened.spent_in(0), reopened.spent_in(1), reopened.spent) == (1, 2, 3)


def test_a_round_pinned_in_epoch_1_cannot_be_recorded_as_epoch_2(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_endorsement(5, PIN, epoch=1)
    with pytest.raises(DecryptionRefused, match="round 5 is of key epoch 1, not 2"):
        ledger.record_share(5, 1, PIN, epoch=2)
    with pytest.raises(DecryptionRefused, match="round 5 is of key epoch 1, not 2"):
        ledger.record_endorsement(5, PIN, epoch=2)
    state = ledger.load()
    assert state.shares == () and state.epochs == ((5, 1),)  # nothing was counted
    assert ledger.record_share(5, 1, PIN, epoch=1).spent_in(1) == 1  # its own epoch: fine


def test_a_round_endorsed_in_epoch_0_cannot_be_shared_as_epoch_1(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_endorsement(5, PIN)
    with pytest.raises(DecryptionRefused, match="round 5 is of key epoch 0, not 1"):
        ledger.record_share(5, 1, PIN, epoch=1)
    state = ledger.load()
    assert state.shares == () and state.epochs == ()


def test_epochs_and_destroyed_round_trip_through_the_maced_file(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_endorsement(5, PIN, epoch=1)
    ledger.record_share(5, 1, PIN, epoch=1)
    ledger.record_share(6, 1, OTHER_PIN, epoch=3)
    ledger.record_destroyed(0)
    ledger.record_destroyed(1)
    seq = json.loads((tmp_path / SEQ_FILE).read_bytes())["seq"]
    assert ledger.record_destroyed(1).destroyed == (0, 1)  # again: nothing written
    assert json.loads((tmp_path / SEQ_FILE).read_bytes())["seq"] == seq
    reopened = _ledger(tmp_path).load()
    assert reopened.epochs == ((5, 1), (6, 3)) and reopened.destroyed == (0, 1)
    assert reopened == ledger.load()
    raw = _raw(tmp_path)
    assert (raw["epochs"], raw["destroyed"]) == ([[5, 1], [6, 3]], [0, 1])


def test_a_ledger_of_epoch_0_only_keeps_the_earlier_format_2_layout(tmp_path: Path) -> None:
    """No epoch record, nothing destroyed: no field, byte for byte what earlier agents wrote."""
    ledger = _ledger(tmp_path)
    ledger.record_endorsement(5, PIN, epoch=0)
    ledger.record_share(5, 1, PIN, epoch=0)
    ledger.record_completed(5)
    assert set(_raw(tmp_path)) == FORMAT_2_FIELDS
    assert LedgerState().body(FED, 1).keys() == FORMAT_2_FIELDS - {"mac"}
    ledger.record_destroyed(0)
    assert set(_raw(tmp_path)) == FORMAT_2_FIELDS | {"destroyed"}


@pytest.mark.parametrize(
    "changes",
    [{"epochs": []}, {"epochs": [[5, 2]]}, {"destroyed": []}, {"destroyed": [0]}],
    ids=["epochs-removed", "epoch-changed", "destroyed-removed", "destroyed-changed"],
)
def test_an_edited_epoch_record_is_detected(tmp_path: Path, changes: dict[str, object]) -> None:
    """Dropping ``destroyed`` would revive an epoch, and moving a round to another epoch
    would spend another budget: both are under the MAC."""
    ledger = _ledger(tmp_path)
    ledger.record_share(5, 1, PIN, epoch=1)
    ledger.record_destroyed(1)
    raw = _raw(tmp_path)
    raw.update(changes)
    (tmp_path / LEDGER_FILE).write_text(json.dumps(raw))
    with pytest.raises(KeyStoreError, match="integrity check"):
        _ledger(tmp_path).load()


@pytest.mark.parametrize(
    "fields",
    [{"epochs": [[1]]}, {"epochs": [["1", 1]]}, {"epochs": [[1, True]]}, {"destroyed": [0.5]}],
    ids=["short-pair", "text-round", "bool-epoch", "float-destroyed"],
)
def test_malformed_epoch_fields_are_an_error(fields: dict[str, object]) -> None:
    body = LedgerState().body(FED, 1)
    with pytest.raises(KeyStoreError, match="ledger is malformed"):
        LedgerState.from_body({**body, **fields})


# ---- verify and endorse: per-epoch τ, destroyed epochs, the round's epoch ---------------------


def test_a_member_that_spent_tau_in_epoch_0_still_shares_in_epoch_1(
    setup: Setup, epoch_0: Asked, epoch_1: Asked
) -> None:
    tau = setup.params.tau
    spent = _spent(tau, epoch=0)
    _refused(_verify(setup, epoch_0, spent), f"key epoch 0's decryption budget τ={tau} is spent")
    decision = _verify(setup, epoch_1, spent)
    assert decision.accepted, decision.reason


def test_the_budget_of_epoch_1_is_its_own(setup: Setup, epoch_0: Asked, epoch_1: Asked) -> None:
    tau = setup.params.tau
    spent = _spent(tau, epoch=1)
    _refused(_verify(setup, epoch_1, spent), f"key epoch 1's decryption budget τ={tau} is spent")
    assert _verify(setup, epoch_0, spent).accepted
    one_left = _spent(tau - 1, epoch=1)
    assert _verify(setup, epoch_1, one_left).accepted


def test_a_destroyed_epoch_is_neither_decrypted_nor_endorsed(
    setup: Setup, epoch_0: Asked, epoch_1: Asked
) -> None:
    destroyed = LedgerState(destroyed=(1,))
    words = "destroyed its key shares of epoch 1"
    _refused(_verify(setup, epoch_1, destroyed), words)
    _refused(_endorse(setup, epoch_1, destroyed), words)
    assert _verify(setup, epoch_0, destroyed).accepted  # only that epoch is over
    assert _endorse(setup, epoch_0, destroyed).accepted


@pytest.mark.parametrize(("pinned", "asked"), [(1, 2), (0, 1), (1, 0)], ids=str)
def test_a_round_pinned_in_one_epoch_is_refused_under_another(
    setup: Setup, epoch_0: Asked, epoch_1: Asked, pinned: int, asked: int
) -> None:
    """The ledger as the agent leaves it after endorsing the round in ``pinned``; the server
    then asks for the same set under epoch ``asked``."""
    honest = epoch_0 if pinned == 0 else epoch_1
    ledger = LedgerState().with_epoch(ROUND, pinned).with_pin(ROUND, _pin_of(honest.request))
    assert _verify(setup, honest, ledger).accepted
    relabelled = honest.request.model_copy(update={"epoch": asked})
    other = Asked(setup.endorsed(relabelled), honest.blobs)
    words = f"round {ROUND} was pinned in key epoch {pinned}, the request says {asked}"
    _refused(_verify(setup, other, ledger), words)
    _refused(_endorse(setup, other, ledger), words)


def test_an_endorsement_names_the_requests_epoch(setup: Setup, epoch_1: Asked) -> None:
    decision = _endorse(setup, epoch_1, LedgerState())
    assert decision.endorsement is not None and decision.endorsement.epoch == 1


# ---- verify and endorse read the roster passed, not the configuration -------------------------


def test_a_client_in_the_roster_but_not_the_config_is_accepted(
    setup: Setup, epoch_0: Asked
) -> None:
    assert "intruder" not in {c.name for c in setup.config.clients}
    key = setup.clients["intruder"].public.signing_key.hex()
    roster = dataclasses.replace(
        setup.roster, clients=(*setup.roster.clients, RosterClient("intruder", key))
    )
    blobs = {**epoch_0.blobs, "intruder": setup.upload("intruder")}
    request = epoch_0.request.model_copy(
        update={
            "uploads": [setup.record(name, blob) for name, blob in blobs.items()],
            "aggregate_sha256": digest_of_sum(list(blobs.values()), setup.params),
        }
    )
    four = Asked(setup.endorsed(request), blobs)
    decision = _verify(setup, four, LedgerState(), roster)
    assert decision.accepted, decision.reason
    assert _endorse(setup, four, LedgerState(), roster).accepted
    words = "'intruder' in the upload list is not an enrolled client"
    _refused(_verify(setup, four, LedgerState()), words)  # the same config, its own roster
    _refused(_endorse(setup, four, LedgerState()), words)


def test_a_client_in_the_config_but_not_the_roster_is_refused(setup: Setup, epoch_0: Asked) -> None:
    assert "bank-1" in {c.name for c in setup.config.clients}
    roster = dataclasses.replace(
        setup.roster, clients=tuple(c for c in setup.roster.clients if c.name != "bank-1")
    )
    words = "'bank-1' in the upload list is not an enrolled client"
    _refused(_verify(setup, epoch_0, LedgerState(), roster), words)
    _refused(_endorse(setup, epoch_0, LedgerState(), roster), words)


def test_k_min_t_and_the_committee_are_the_rosters(setup: Setup, epoch_0: Asked) -> None:
    assert (setup.config.k_min, setup.config.threshold) == (3, 2)
    higher_k_min = dataclasses.replace(setup.roster, k_min=4)
    _refused(_verify(setup, epoch_0, LedgerState(), higher_k_min), "only 3 clients, K_min is 4")
    _refused(_endorse(setup, epoch_0, LedgerState(), higher_k_min), "only 3 clients, K_min is 4")
    higher_t = dataclasses.replace(setup.roster, threshold=3)
    _refused(_verify(setup, epoch_0, LedgerState(), higher_t), "[1, 2] is not t=3 distinct")
    without_2 = dataclasses.replace(
        setup.roster, members=tuple(m for m in setup.roster.members if m.index != 2)
    )
    _refused(_verify(setup, epoch_0, LedgerState(), without_2), "[1, 2] is not t=2 distinct")


# ---- destroying an epoch's secrets ---------------------------------------------------------


def test_epoch_0_lives_in_the_state_folder_and_later_ones_under_epochs(tmp_path: Path) -> None:
    assert epoch_dir(tmp_path, 0) == tmp_path
    assert epoch_dir(tmp_path, 2) == tmp_path / "epochs" / "2"


def test_destroy_epoch_overwrites_and_removes_the_secrets_and_keeps_the_public_files(
    tmp_path: Path,
) -> None:
    folder = epoch_dir(tmp_path, 2)
    (folder / "dealt").mkdir(parents=True)
    secrets = [folder / MEMBER_KEY, folder / "dkg-secret.key"]
    secrets += [folder / "dealt" / f"{m}.bin" for m in (1, 3)]
    public = [folder / KEY_STATEMENT_FILE, folder / COMMITMENTS_FILE]
    written = {path: os.urandom(200 + i) for i, path in enumerate([*secrets, *public])}
    links = tmp_path / "links"
    links.mkdir()
    for i, (path, content) in enumerate(written.items()):
        path.write_bytes(content)
        if path in secrets:  # a second name for the same inode: it sees the overwrite
            os.link(path, links / str(i))
    assert destroy_epoch(folder) is True
    assert [p for p in secrets if p.exists()] == []
    for i, path in enumerate(secrets):
        left = (links / str(i)).read_bytes()
        assert len(left) == len(written[path]) and left != written[path]
    assert {p: p.read_bytes() for p in public} == {p: written[p] for p in public}
    assert destroy_epoch(folder) is False  # nothing left to destroy


@pytest.mark.parametrize("made", [True, False], ids=["empty", "missing"])
def test_destroy_epoch_of_a_folder_without_secrets_is_false(tmp_path: Path, made: bool) -> None:
    folder = tmp_path / "epochs" / "1"
    if made:
        folder.mkdir(parents=True)
    assert destroy_epoch(folder) is False
