"""CI smoke test of the torture harness (``benchmarks/reliability.py``): every part at a
few trials against real server processes over loopback, and the issue's targets checked
(0 lost, corrupted or duplicated uploads, 0 5xx, nothing written by rejected requests,
every client in, every allowed dropout set published, every larger one aborted bare).
The figures themselves are published by the full run, not here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.bench.reliability import (
    README_BEGIN,
    README_END,
    ReliabilityConfig,
    ReliabilityReport,
    run_reliability,
    update_readme,
    write_report,
)
from clients.bench.reliability_dropout import DropoutConfig, DropoutFigures, dropout_sets
from clients.bench.reliability_fuzz import FuzzFigures
from clients.bench.reliability_kill import KILL_KINDS, KillFigures
from clients.bench.reliability_load import LoadFigures

SMOKE = ReliabilityConfig.smoke()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ReliabilityReport:
    return run_reliability(SMOKE, tmp_path_factory.mktemp("reliability"))


def test_kill_9_loses_corrupts_and_duplicates_no_acknowledged_upload(
    report: ReliabilityReport,
) -> None:
    kill = report.parts["kill"]
    assert isinstance(kill, KillFigures)
    assert kill.kills == SMOKE.kill.trials and kill.unexpected_deaths == 0
    # the least-used kind goes next: the first kills are all of different kinds
    assert sorted(kill.by_kind.values()) == [0] * (len(KILL_KINDS) - kill.kills) + [1] * kill.kills
    assert (kill.lost, kill.corrupted, kill.duplicated) == (0, 0, 0)
    assert kill.never_acknowledged == 0
    assert kill.acknowledged == kill.rounds * SMOKE.kill.clients  # every client of every round
    assert kill.resent_other_bytes == 0 and kill.refused_retries == 0
    assert kill.rounds >= 1 and kill.rounds_correct == kill.rounds
    recoveries = [k.recovery_s for k in kill.kill_list if k.recovery_s is not None]
    assert recoveries and all(0 < seconds < 60 for seconds in recoveries)


def test_fuzzing_gets_no_server_error_and_rejected_requests_write_nothing(
    report: ReliabilityReport,
) -> None:
    fuzz = report.parts["fuzz"]
    assert isinstance(fuzz, FuzzFigures)
    assert fuzz.requests == SMOKE.fuzz.requests
    assert set(fuzz.by_source) == {"envelopes", "unsigned", "signed"}
    assert min(fuzz.by_source.values()) > 0
    assert fuzz.server_errors == 0 and fuzz.server_deaths == 0 and fuzz.no_answer == 0
    assert fuzz.rejected > 0  # the books were kept on requests that were refused
    assert fuzz.rows_by_rejected == 0 and fuzz.blobs_by_rejected == 0
    assert fuzz.rss_growth_mb < 100
    assert fuzz.reached_handlers >= 0.6  # signed, on live paths: into the routes themselves


def test_every_client_of_the_load_gets_in_with_bounded_memory(report: ReliabilityReport) -> None:
    load = report.parts["load"]
    assert isinstance(load, LoadFigures)
    assert load.clients == SMOKE.load.clients == load.acknowledged
    assert load.never_acknowledged == 0
    assert (load.lost, load.duplicated, load.corrupted) == (0, 0, 0)
    assert load.cap_uploads == SMOKE.load.clients // 2  # about twice what it admits arrives
    assert 0 < load.rss_peak_mb <= 1536
    assert load.health_samples > 0 and load.health_failures == 0
    # the < 100 ms target is the full run's figure (benchmarks/README.md), not a timed test
    # on a shared machine; a loop blocked on file or database work would stall for seconds
    assert load.health_p95_ms < 2000


def test_allowed_dropout_sets_publish_and_larger_ones_release_no_share(
    report: ReliabilityReport,
) -> None:
    dropout = report.parts["dropout"]
    assert isinstance(dropout, DropoutFigures)
    allowed = [s for s in dropout.sets if s.allowed]
    larger = [s for s in dropout.sets if not s.allowed]
    assert len(allowed) == len(larger) == 2
    for chosen in allowed:
        assert chosen.state == "published" and chosen.max_error <= chosen.bound, chosen
    for chosen in larger:
        assert chosen.state == "aborted", chosen
        assert chosen.shares_on_server == chosen.shares_by_members == 0, chosen


def test_an_outage_longer_than_the_share_timeout_does_not_lose_the_round(
    report: ReliabilityReport,
) -> None:
    dropout = report.parts["dropout"]
    assert isinstance(dropout, DropoutFigures)
    outage = dropout.outage
    assert outage.down_s > outage.share_timeout  # the server was down past the deadline
    assert outage.state == "published" and outage.max_error <= outage.bound
    assert outage.attempts == 1 and outage.decryptions_spent == 1


def test_the_report_is_written_as_json_and_a_markdown_table(
    report: ReliabilityReport, tmp_path: Path
) -> None:
    table = write_report(report, tmp_path)
    data = json.loads((tmp_path / "reliability.json").read_text())
    assert data["schema"] == "he-agg-reliability/1" and set(data["parts"]) == set(SMOKE.parts)
    assert len(data["table"]) == len(report.figures)
    assert (tmp_path / "reliability.md").read_text() == table + "\n"
    assert "| kill -9 | acknowledged uploads lost | 0 | 0 | yes |" in table
    # every target is met but the timed ones (a latency on a shared machine: the full run's
    # figure, see test_every_client_of_the_load_gets_in_with_bounded_memory)
    timed = [figure.name for figure in report.figures if figure.timed]
    assert timed == ["GET /health during the load: p95 / max"]
    assert all(figure.met is not False for figure in report.figures if not figure.timed)
    missed = [line for line in table.splitlines() if "**no**" in line]
    assert all(line.startswith(f"| load | {timed[0]} |") for line in missed), missed
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\n{README_BEGIN}\nold\n{README_END}\n\nafter\n")
    update_readme(readme, table)
    assert readme.read_text() == f"# Benchmarks\n\n{README_BEGIN}\n{table}\n{README_END}\n\nafter\n"


def test_dropout_sets_cover_every_allowed_set_and_the_next_larger_ones() -> None:
    config = DropoutConfig()  # 3 of 5: quorum 4, so one member may drop; K_min 4 of 8
    sets = dropout_sets(config)
    allowed = {(s.dropped_clients, s.dropped_members) for s in sets if s.allowed}
    assert allowed == {(c, m) for c in range(5) for m in [(), (1,), (2,), (3,), (4,), (5,)]}
    larger = [s for s in sets if not s.allowed]
    assert all(s.dropped_clients > 4 or len(s.dropped_members) > 1 for s in larger)
    assert {s.dropped_clients for s in larger} >= {5, 6, 7, 8}
    assert sum(len(s.dropped_members) == 2 for s in larger) == 10 + 1  # every pair, and a mix
