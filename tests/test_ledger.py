"""The member's ledger on disk: round trips, durable atomic writes with mode 0600, the MAC
under the member's own key, the high-water mark and share files that catch a rollback, the
crash between the two writes, the one-time upgrade of the legacy format, and the upgrade
floor (set once, MACed, absent unless set)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from he_agg.errors import DecryptionRefused, KeyStoreError
from keys.identity import Identity
from keys.ledger import (
    LEDGER_FILE,
    SEQ_FILE,
    Ledger,
    LedgerState,
    Pin,
    ledger_key,
    share_path,
    write_durably,
)

FED = "ledger-fed"
ME = Identity.generate(1)
OTHER_MEMBER = Identity.generate(2)
PIN = Pin("11" * 32, "22" * 32, 3)
OTHER_PIN = Pin("33" * 32, "22" * 32, 2)


NOW = 1_700_000_000  # the clock of every ledger here: the floor a legacy upgrade sets


def _ledger(folder: Path, identity: Identity = ME, federation: str = FED) -> Ledger:
    return Ledger(folder, ledger_key(identity, federation), federation, clock=lambda: NOW + 0.7)


def _released(folder: Path, round: int, attempt: int) -> None:
    """A share file as the agent keeps it once the share was recorded."""
    path = share_path(folder, round, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"share bytes")


def _seq(folder: Path, name: str) -> int:
    value = json.loads((folder / name).read_bytes())["seq"]
    assert isinstance(value, int)
    return value


# ---- round trips -----------------------------------------------------------------------


def test_a_missing_ledger_is_empty(tmp_path: Path) -> None:
    state = _ledger(tmp_path).load()
    assert state == LedgerState() and state.spent == 0
    assert list(tmp_path.iterdir()) == []  # loading writes nothing


def test_records_survive_a_new_ledger_object_in_order(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_share(3, 1, PIN)
    ledger.record_share(1, 1, OTHER_PIN)
    ledger.record_share(3, 2, PIN)
    ledger.record_completed(3)
    reopened = _ledger(tmp_path).load()
    assert reopened.shares == ((3, 1), (1, 1), (3, 2))
    assert reopened.completed == (3,)
    assert reopened.pins == ((3, PIN), (1, OTHER_PIN))
    assert reopened.spent == 3
    assert _seq(tmp_path, LEDGER_FILE) == _seq(tmp_path, SEQ_FILE) == 4


def test_recording_twice_counts_once_and_does_not_rewrite(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_share(1, 1, PIN)
    ledger.record_completed(1)
    before = (tmp_path / LEDGER_FILE).stat().st_mtime_ns
    os.utime(tmp_path / LEDGER_FILE, ns=(before - 10**9, before - 10**9))
    assert ledger.record_share(1, 1, PIN).spent == 1
    assert ledger.record_completed(1).completed == (1,)
    assert (tmp_path / LEDGER_FILE).stat().st_mtime_ns == before - 10**9
    assert _seq(tmp_path, LEDGER_FILE) == 2


def test_state_answers_the_member_checks() -> None:
    state = LedgerState(shares=((1, 2), (4, 1)))
    assert state.shared(1) and state.shared(4) and not state.shared(2)
    assert not state.is_new_attempt(1, 2) and not state.is_new_attempt(1, 1)
    assert state.is_new_attempt(1, 3) and state.is_new_attempt(2, 1)
    assert state.with_completed(1).with_completed(1).completed == (1,)
    assert state.with_share(1, 2) is state
    assert state.pin(1) is None


def test_the_first_share_of_a_round_pins_its_upload_set() -> None:
    state = LedgerState().with_share(5, 1, PIN)
    assert state.pin(5) == PIN and state.pin(6) is None
    again = state.with_share(5, 2, PIN)  # the same set, a new attempt: counted, pin kept
    assert again.shares == ((5, 1), (5, 2)) and again.pins == ((5, PIN),)
    assert again.with_share(5, 2, PIN) is again
    with pytest.raises(DecryptionRefused, match="round 5 is pinned to upload set 11111111"):
        state.with_share(5, 2, OTHER_PIN)


def test_recording_another_upload_set_for_a_pinned_round_is_refused(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_share(5, 1, PIN)
    with pytest.raises(DecryptionRefused, match="pinned"):
        ledger.record_share(5, 2, OTHER_PIN)
    assert ledger.load().shares == ((5, 1),)  # nothing was counted


# ---- endorsements: a pin without a share ----------------------------------------------------


def test_an_endorsement_pins_the_round_without_spending_tau(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    state = ledger.record_endorsement(5, PIN)
    assert state.pin(5) == PIN and state.spent == 0 and not state.shared(5)
    assert ledger.record_endorsement(5, PIN) == state  # the same pin again: no change
    assert _seq(tmp_path, LEDGER_FILE) == 1  # … and no second write


def test_an_endorsement_pin_survives_a_restart_and_binds_the_share(tmp_path: Path) -> None:
    _ledger(tmp_path).record_endorsement(5, PIN)
    reopened = _ledger(tmp_path)  # a new process on the same folder
    assert reopened.load().pin(5) == PIN and reopened.load().spent == 0
    with pytest.raises(DecryptionRefused, match="round 5 is pinned to upload set 11111111"):
        reopened.record_endorsement(5, OTHER_PIN)
    with pytest.raises(DecryptionRefused, match="pinned"):
        reopened.record_share(5, 1, OTHER_PIN)
    assert reopened.load().spent == 0  # nothing counted by the refused share
    shared = reopened.record_share(5, 1, PIN)  # the endorsed set: τ counted now, pin kept
    assert shared.spent == 1 and shared.pins == ((5, PIN),)


def test_a_share_pin_refuses_another_endorsement(tmp_path: Path) -> None:
    """A pin from an earlier share (ledgers before endorsements) still counts."""
    ledger = _ledger(tmp_path)
    ledger.record_share(5, 1, PIN)
    with pytest.raises(DecryptionRefused, match="pinned"):
        ledger.record_endorsement(5, OTHER_PIN)
    assert ledger.record_endorsement(5, PIN).pins == ((5, PIN),)


def test_with_pin_is_pure_and_refuses_a_second_set() -> None:
    state = LedgerState().with_pin(2, PIN)
    assert state.pins == ((2, PIN),) and state.shares == ()
    assert state.with_pin(2, PIN) is state
    assert state.with_pin(3, OTHER_PIN).pins == ((2, PIN), (3, OTHER_PIN))
    with pytest.raises(DecryptionRefused, match="round 2 is pinned"):
        state.with_pin(2, OTHER_PIN)


def test_an_edited_endorsement_pin_is_detected(tmp_path: Path) -> None:
    _ledger(tmp_path).record_endorsement(5, PIN)
    raw = json.loads((tmp_path / LEDGER_FILE).read_bytes())
    raw["pins"] = []  # the round forgotten: it could be endorsed for another set
    (tmp_path / LEDGER_FILE).write_text(json.dumps(raw))
    with pytest.raises(KeyStoreError, match="integrity check"):
        _ledger(tmp_path).load()


# ---- the upgrade floor ---------------------------------------------------------------------


def test_the_floor_round_trips_is_set_once_and_kept_by_every_record(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.record_floor(NOW).floor == NOW
    assert ledger.record_floor(NOW + 50).floor == NOW  # the first floor stays …
    assert _seq(tmp_path, LEDGER_FILE) == 1  # … and a second one writes nothing
    ledger.record_endorsement(5, PIN)
    ledger.record_share(5, 1, PIN)
    ledger.record_completed(5, 6)
    reopened = _ledger(tmp_path).load()
    assert (reopened.floor, reopened.pins, reopened.completed) == (NOW, ((5, PIN),), (5, 6))
    assert json.loads((tmp_path / LEDGER_FILE).read_bytes())["floor"] == NOW


def test_a_ledger_without_a_floor_keeps_the_earlier_format_2_layout(tmp_path: Path) -> None:
    """No floor, no field: what format-2 agents wrote before floors loads unchanged."""
    _ledger(tmp_path).record_share(1, 1, PIN)
    raw = json.loads((tmp_path / LEDGER_FILE).read_bytes())
    assert set(raw) == {"format", "federation", "seq", "shares", "completed", "pins", "mac"}
    assert raw["format"] == 2 and _ledger(tmp_path).load().floor is None


@pytest.mark.parametrize("removed", [False, True], ids=["moved-back", "removed"])
def test_an_edited_floor_is_detected(tmp_path: Path, removed: bool) -> None:
    """Moving the floor back (or dropping it) would let older rounds be endorsed."""
    _ledger(tmp_path).record_floor(NOW)
    raw = json.loads((tmp_path / LEDGER_FILE).read_bytes())
    raw["floor"] = NOW - 3600
    if removed:
        del raw["floor"]
    (tmp_path / LEDGER_FILE).write_text(json.dumps(raw))
    with pytest.raises(KeyStoreError, match="integrity check"):
        _ledger(tmp_path).load()


def test_a_malformed_floor_is_an_error() -> None:
    body = LedgerState().body(FED, 1)
    with pytest.raises(KeyStoreError, match="ledger is malformed"):
        LedgerState.from_body({**body, "floor": "1700000000"})


# ---- the file: durable, atomic, 0600 ------------------------------------------------------


def test_both_files_are_written_with_mode_0600(tmp_path: Path) -> None:
    (tmp_path / (LEDGER_FILE + ".tmp")).write_bytes(b"stale")
    os.chmod(tmp_path / (LEDGER_FILE + ".tmp"), 0o644)  # a stale temporary keeps no mode
    _ledger(tmp_path).record_share(1, 1, PIN)
    for name in (LEDGER_FILE, SEQ_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_save_replaces_each_file_atomically_after_fsync_ledger_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        events.append("fsync")
        real_fsync(descriptor)

    def replace(source: str | Path, target: str | Path) -> None:
        events.append(f"replace {Path(source).name} -> {Path(target).name}")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _ledger(tmp_path).record_share(1, 1, PIN)
    assert events == [
        "fsync",
        f"replace {LEDGER_FILE}.tmp -> {LEDGER_FILE}",
        "fsync",  # the folder
        "fsync",
        f"replace {SEQ_FILE}.tmp -> {SEQ_FILE}",
        "fsync",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_FILE, SEQ_FILE]  # no .tmp


def test_a_failed_write_leaves_the_old_ledger_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_share(1, 1, PIN)

    def failing_fsync(descriptor: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        ledger.record_share(2, 1, OTHER_PIN)
    monkeypatch.undo()
    assert _ledger(tmp_path).load().shares == ((1, 1),)


def test_write_durably_overwrites_a_stale_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "pin.json"
    (tmp_path / "pin.json.tmp").write_bytes(b"left over by a crash, and longer than the data")
    write_durably(target, b"new")
    assert target.read_bytes() == b"new"
    assert not (tmp_path / "pin.json.tmp").exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# ---- integrity ---------------------------------------------------------------------------


def _edit(path: Path, **changes: object) -> None:
    """Change fields of a ledger file, keeping its (now stale) MAC."""
    raw = json.loads(path.read_bytes())
    raw.update(changes)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "changes",
    [{"shares": []}, {"completed": [1, 2]}, {"pins": []}, {"seq": 9}, {"floor": NOW}],
    ids=["shares-removed", "completed-added", "pin-removed", "seq-changed", "floor-added"],
)
def test_an_edited_ledger_is_detected(tmp_path: Path, changes: dict[str, object]) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_share(1, 1, PIN)
    ledger.record_completed(1)
    _edit(tmp_path / LEDGER_FILE, **changes)
    with pytest.raises(KeyStoreError, match=r"ledger.json fails its integrity check"):
        ledger.load()
    with pytest.raises(KeyStoreError):  # nor can it be recorded on
        ledger.record_share(2, 1, OTHER_PIN)


def test_an_edited_mark_is_detected(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_share(1, 1, PIN)
    _edit(tmp_path / SEQ_FILE, seq=5)
    with pytest.raises(KeyStoreError, match=r"ledger.seq fails its integrity check"):
        ledger.load()


def test_a_ledger_with_its_mac_removed_is_not_taken_for_the_legacy_format(
    tmp_path: Path,
) -> None:
    _ledger(tmp_path).record_share(1, 1, PIN)
    raw = json.loads((tmp_path / LEDGER_FILE).read_bytes())
    del raw["mac"]
    (tmp_path / LEDGER_FILE).write_text(json.dumps(raw))
    with pytest.raises(KeyStoreError, match="integrity check"):
        _ledger(tmp_path).load()


@pytest.mark.parametrize("whose", ["another-member", "another-federation"])
def test_a_ledger_under_another_key_is_detected(tmp_path: Path, whose: str) -> None:
    """Member 2's valid ledger copied into member 1's folder, or another federation's."""
    if whose == "another-member":
        _ledger(tmp_path, identity=OTHER_MEMBER).record_share(1, 1, PIN)
        reader = _ledger(tmp_path)
    else:
        _ledger(tmp_path, federation="other-fed").record_share(1, 1, PIN)
        reader = _ledger(tmp_path)
    with pytest.raises(KeyStoreError, match="another member's or federation's key"):
        reader.load()


def test_the_mac_key_is_per_member_and_per_federation() -> None:
    key = ledger_key(ME, FED)
    assert len(key) == 32 and key == ledger_key(ME, FED)
    assert key != ledger_key(OTHER_MEMBER, FED) and key != ledger_key(ME, "other-fed")


# ---- rollback ---------------------------------------------------------------------------


def _history(folder: Path) -> list[dict[str, bytes]]:
    """Three writes, a copy of both files after each: seq 1, 2, 3."""
    ledger = _ledger(folder)
    copies = []
    for round in (1, 2, 3):
        ledger.record_share(round, 1, PIN)
        copies.append({n: (folder / n).read_bytes() for n in (LEDGER_FILE, SEQ_FILE)})
    return copies


def test_an_older_ledger_restored_alone_is_detected(tmp_path: Path) -> None:
    old = _history(tmp_path)[0]
    (tmp_path / LEDGER_FILE).write_bytes(old[LEDGER_FILE])  # valid MAC, seq 1
    with pytest.raises(KeyStoreError, match=r"rolled back: its seq 1 is below the high-water"):
        _ledger(tmp_path).load()


def test_an_older_ledger_and_mark_restored_together_are_caught_by_the_share_files(
    tmp_path: Path,
) -> None:
    old = _history(tmp_path)[0]
    for round in (1, 2, 3):
        _released(tmp_path, round, 1)
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(KeyStoreError, match=r"rolled back: shares/ .* \[\(2, 1\), \(3, 1\)\]"):
        _ledger(tmp_path).load()


def test_an_older_ledger_and_mark_restored_without_share_files_go_unnoticed(
    tmp_path: Path,
) -> None:
    """The documented limit: a consistent older copy of the folder cannot be told apart
    from this member at that earlier time."""
    old = _history(tmp_path)[0]
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    assert _ledger(tmp_path).load().shares == ((1, 1),)


def test_a_deleted_ledger_is_detected_by_the_share_files(tmp_path: Path) -> None:
    _ledger(tmp_path).record_share(1, 1, PIN)
    _released(tmp_path, 1, 1)
    (tmp_path / LEDGER_FILE).unlink()
    (tmp_path / SEQ_FILE).unlink()
    with pytest.raises(KeyStoreError, match="missing but shares/ holds 1 released"):
        _ledger(tmp_path).load()


def test_a_deleted_ledger_is_detected_by_the_mark(tmp_path: Path) -> None:
    _ledger(tmp_path).record_share(1, 1, PIN)
    (tmp_path / LEDGER_FILE).unlink()
    with pytest.raises(KeyStoreError, match=r"missing but ledger.seq shows 1 writes"):
        _ledger(tmp_path).load()


def test_a_deleted_mark_is_detected_after_the_first_write(tmp_path: Path) -> None:
    _history(tmp_path)
    (tmp_path / SEQ_FILE).unlink()
    with pytest.raises(KeyStoreError, match=r"ledger.seq is missing but the ledger was written 3"):
        _ledger(tmp_path).load()


def test_a_mark_restored_two_writes_back_is_detected(tmp_path: Path) -> None:
    old = _history(tmp_path)[0]
    (tmp_path / SEQ_FILE).write_bytes(old[SEQ_FILE])
    with pytest.raises(KeyStoreError, match=r"more than one write behind"):
        _ledger(tmp_path).load()


def test_a_share_file_the_ledger_lacks_is_detected(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_share(1, 1, PIN)
    _released(tmp_path, 1, 1)
    assert ledger.load().shares == ((1, 1),)
    _released(tmp_path, 1, 2)
    pending = share_path(tmp_path, 4, 1).with_suffix(".pending")
    pending.write_bytes(b"never left")
    with pytest.raises(KeyStoreError, match=r"\[\(1, 2\)\]"):  # the .pending is not counted
        ledger.load()


# ---- crash between the two writes ---------------------------------------------------------


def test_a_crash_between_ledger_and_mark_is_accepted_and_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_share(1, 1, PIN)

    def crash(self: Ledger, seq: int) -> None:
        raise OSError("killed")

    monkeypatch.setattr(Ledger, "_write_mark", crash)
    with pytest.raises(OSError, match="killed"):
        ledger.record_share(2, 1, OTHER_PIN)
    monkeypatch.undo()
    assert (_seq(tmp_path, LEDGER_FILE), _seq(tmp_path, SEQ_FILE)) == (2, 1)
    assert _ledger(tmp_path).load().shares == ((1, 1), (2, 1))
    assert _seq(tmp_path, SEQ_FILE) == 2  # the mark caught up
    _ledger(tmp_path).record_share(3, 1, PIN)
    assert (_seq(tmp_path, LEDGER_FILE), _seq(tmp_path, SEQ_FILE)) == (3, 3)


def test_a_crash_before_the_first_mark_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: Ledger, seq: int) -> None:
        raise OSError("killed")

    monkeypatch.setattr(Ledger, "_write_mark", crash)
    with pytest.raises(OSError, match="killed"):
        _ledger(tmp_path).record_share(1, 1, PIN)
    monkeypatch.undo()
    assert not (tmp_path / SEQ_FILE).exists()
    assert _ledger(tmp_path).load().shares == ((1, 1),)
    assert _seq(tmp_path, SEQ_FILE) == 1


# ---- the legacy format ------------------------------------------------------------------

# byte for byte what keys/agent.py wrote before the ledger had a MAC
LEGACY = json.dumps({"shares": [[1, 0], [2, 1], [2, 2]], "completed": [1]}).encode()


def test_the_legacy_format_is_upgraded_in_place_once(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_bytes(LEGACY)
    state = _ledger(tmp_path).load()
    assert state == LedgerState(shares=((1, 0), (2, 1), (2, 2)), completed=(1,), floor=NOW)
    upgraded = json.loads((tmp_path / LEDGER_FILE).read_bytes())
    assert upgraded["format"] == 2 and upgraded["seq"] == 1 and "mac" in upgraded
    assert upgraded["floor"] == NOW  # the time of the upgrade: its rounds predate it
    assert _seq(tmp_path, SEQ_FILE) == 1
    assert _ledger(tmp_path).load() == state  # read as a MACed ledger from now on
    (tmp_path / LEDGER_FILE).write_bytes(LEGACY)  # … and never again as a legacy one
    with pytest.raises(KeyStoreError, match=r"legacy format.*ledger\.seq exists"):
        _ledger(tmp_path).load()


def test_the_legacy_upgrade_counts_shares_stored_but_not_recorded(tmp_path: Path) -> None:
    """Earlier agents stored a share before recording it: a crash between left one over."""
    (tmp_path / LEDGER_FILE).write_bytes(LEGACY)
    _released(tmp_path, 2, 1)
    _released(tmp_path, 7, 3)
    state = _ledger(tmp_path).load()
    assert state.shares == ((1, 0), (2, 1), (2, 2), (7, 3))
    assert state.pin(7) is None  # its upload set is unknown


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"completed": []}',
        '{"shares": []}',
        '{"shares": [[1]], "completed": []}',
        '{"shares": [["1", 1]], "completed": []}',
        '{"shares": [[1, true]], "completed": []}',
        '{"shares": [], "completed": [1.5]}',
        "[]",
    ],
)
def test_a_malformed_ledger_is_an_error_not_an_empty_one(tmp_path: Path, text: str) -> None:
    (tmp_path / LEDGER_FILE).write_text(text)
    with pytest.raises(KeyStoreError, match="ledger is malformed"):
        _ledger(tmp_path).load()
    assert not (tmp_path / SEQ_FILE).exists()
