"""The member's ledger on disk: round trips, durable atomic writes, and today's file format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from he_agg.errors import KeyStoreError
from keys.ledger import LEDGER_FILE, Ledger, LedgerState, write_durably


def test_a_missing_ledger_is_empty(tmp_path: Path) -> None:
    state = Ledger(tmp_path).load()
    assert state == LedgerState() and state.spent == 0
    assert not (tmp_path / LEDGER_FILE).exists()  # loading writes nothing


def test_records_survive_a_new_ledger_object_in_order(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record_share(3, 1)
    ledger.record_share(1, 1)
    ledger.record_share(3, 2)
    ledger.record_completed(3)
    reopened = Ledger(tmp_path).load()
    assert reopened.shares == ((3, 1), (1, 1), (3, 2))
    assert reopened.completed == (3,)
    assert reopened.spent == 3


def test_recording_twice_counts_once_and_does_not_rewrite(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record_share(1, 1)
    ledger.record_completed(1)
    before = (tmp_path / LEDGER_FILE).stat().st_mtime_ns
    os.utime(tmp_path / LEDGER_FILE, ns=(before - 10**9, before - 10**9))
    assert ledger.record_share(1, 1).spent == 1
    assert ledger.record_completed(1).completed == (1,)
    assert (tmp_path / LEDGER_FILE).stat().st_mtime_ns == before - 10**9


def test_state_answers_the_member_checks() -> None:
    state = LedgerState(shares=((1, 2), (4, 1)))
    assert state.shared(1) and state.shared(4) and not state.shared(2)
    assert not state.is_new_attempt(1, 2) and not state.is_new_attempt(1, 1)
    assert state.is_new_attempt(1, 3) and state.is_new_attempt(2, 1)
    assert state.with_completed(1).with_completed(1).completed == (1,)
    assert state.with_share(1, 2) is state


def test_reads_and_writes_the_format_the_agent_always_used(tmp_path: Path) -> None:
    # byte for byte what keys/agent.py wrote before the ledger had its own module
    legacy = json.dumps({"shares": [[1, 0], [2, 1], [2, 2]], "completed": [1]}).encode()
    (tmp_path / LEDGER_FILE).write_bytes(legacy)
    state = Ledger(tmp_path).load()
    assert state == LedgerState(shares=((1, 0), (2, 1), (2, 2)), completed=(1,))
    Ledger(tmp_path).save(state)
    assert (tmp_path / LEDGER_FILE).read_bytes() == legacy


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
        Ledger(tmp_path).load()


def test_save_replaces_the_file_atomically_after_fsync(
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
    Ledger(tmp_path).record_share(1, 1)
    assert events[:2] == ["fsync", f"replace {LEDGER_FILE}.tmp -> {LEDGER_FILE}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_FILE]  # no .tmp left


def test_a_failed_write_leaves_the_old_ledger_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(tmp_path)
    ledger.record_share(1, 1)

    def failing_fsync(descriptor: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        ledger.record_share(2, 1)
    monkeypatch.undo()
    assert Ledger(tmp_path).load().shares == ((1, 1),)


def test_write_durably_overwrites_a_stale_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "pin.json"
    (tmp_path / "pin.json.tmp").write_bytes(b"left over by a crash, and longer than the data")
    write_durably(target, b"new")
    assert target.read_bytes() == b"new"
    assert not (tmp_path / "pin.json.tmp").exists()
