"""The benchmark's critical path of a round, read from the server's JSON-lines log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from clients.bench.bench_report import _PHASE_LABELS
from clients.bench.end_to_end import PHASES, round_phases
from he_agg.server.logs import JsonFormatter


def test_log_times_are_utc_to_the_millisecond() -> None:
    record = logging.LogRecord("he_agg.rounds", logging.INFO, __file__, 1, "x", None, None)
    record.created, record.msecs = 1_795_752_693.4216, 421.6
    entry = json.loads(JsonFormatter().format(record))
    assert entry["time"] == "2026-11-27T04:11:33.421Z"


def _line(time: str, event: str, round: int | None) -> str:
    entry: dict[str, object] = {"time": time, "level": "INFO", "event": event}
    if round is not None:
        entry["round"] = round
    return json.dumps(entry)


def test_round_phases_end_at_the_last_event_of_each_kind(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    second = [
        ("00.000", "round opened"),
        ("00.500", "upload stored"),
        ("01.250", "upload stored"),  # the last upload ends the phase
        ("01.500", "decryption set named"),
        ("01.600", "endorsement stored"),
        ("02.000", "endorsement stored"),
        ("02.100", "decryption share stored"),
        ("02.400", "decryption share stored"),
        ("03.000", "model published"),
    ]
    lines = [_line("2026-11-27T04:00:00.000Z", "round opened", 1), "INFO: uvicorn's own line"]
    lines += [_line(f"2026-11-27T04:00:{t}Z", e, 2) for t, e in second]
    lines.append(_line("2026-11-27T04:00:09.000Z", "aggregator started", None))
    log.write_text("\n".join(lines) + "\n")
    phases = round_phases(log)  # round 1 is the warm-up
    medians = {name: pytest.approx(stats["median"]) for name, stats in phases.items()}
    assert medians == {
        "uploads": 1.25,
        "close_to_set": 0.25,
        "endorsements": 0.5,
        "shares": 0.4,
        "combine_publish": 0.6,
    }
    assert round_phases(log, skip=2) == {}


def test_the_report_labels_every_phase() -> None:
    assert list(_PHASE_LABELS) == [name for name, _, _ in PHASES]
