"""benchmarks/bench_flower.py --quick, run as a user runs it (its own process: it starts a
Ray cluster, an aggregator and a committee): every row is there, and its figures agree
with each other and with each method's arithmetic. About 45 s on two cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_flower.py"
PLAIN = ("fedavg", "fedavg_legacy")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench-flower")
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    data: dict[str, Any] = json.loads((out / "flower.json").read_text())
    data["markdown"] = (out / "flower.md").read_text()
    return data


def _rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["method"]: row for row in result["rows"]}


def test_quick_run_times_plain_fedavg_secaggplus_and_he_agg(result: dict[str, Any]) -> None:
    rows = _rows(result)
    assert {"fedavg", "fedavg_legacy", "secaggplus", "he_agg"} <= set(rows)
    assert result["config"]["repeats"] == 1 and result["config"]["clients"] == 3
    for row in rows.values():
        seconds = row["seconds"]
        assert len(seconds["runs"]) == result["config"]["repeats"]
        assert 0 < seconds["min"] <= seconds["median"] <= seconds["max"]
        assert 0 < row["waiting_for_replies_seconds"]["max"] <= seconds["max"]
        assert row["warmup_seconds"] > 0
    assert rows["he_agg"]["rounds_published"] == result["config"]["repeats"] + 1


def test_ratios_are_the_medians_divided(result: dict[str, Any]) -> None:
    rows = _rows(result)
    fedavg = rows["fedavg"]["seconds"]["median"]
    for row in rows.values():
        median = row["seconds"]["median"]
        baseline = rows[row["plain_baseline"]]["seconds"]["median"]
        assert row["ratio_to_plain"] == pytest.approx(median / baseline)
        assert row["ratio_to_fedavg"] == pytest.approx(median / fedavg)
    assert rows["secaggplus"]["plain_baseline"] == "fedavg_legacy"  # its strategy API
    assert rows["he_agg"]["plain_baseline"] == "fedavg"
    for key in PLAIN:
        assert rows[key]["ratio_to_plain"] == 1.0


def test_errors_stay_within_each_methods_arithmetic(result: dict[str, Any]) -> None:
    rows = _rows(result)
    for key in PLAIN:  # float32 arithmetic on values in [−1, 1]
        assert rows[key]["max_abs_error"] < 1e-6
    secagg = rows["secaggplus"]
    assert 0 < secagg["max_abs_error"] <= secagg["error_bound"] < 1e-4  # quantisation
    he_agg = rows["he_agg"]
    assert 0 < he_agg["max_abs_error"] <= he_agg["error_bound"] < 1e-3  # CKKS noise


def test_bytes_are_what_each_method_sends(result: dict[str, Any]) -> None:
    rows = _rows(result)
    for key in PLAIN:  # one float32 per parameter each way, plus a few keys and metrics
        assert 4.0 <= rows[key]["upload_bytes_per_param"] < 4.5
        assert 4.0 <= rows[key]["download_bytes_per_param"] < 4.5
    assert rows["secaggplus"]["upload_bytes_per_param"] >= 8.0  # int64 masked vectors
    he_agg = rows["he_agg"]
    set_bytes = he_agg["settings"]["parameter_set"]["upload_bytes_per_param"]
    assert he_agg["upload_bytes_per_param"] >= set_bytes  # ciphertexts, padded to N slots


def test_report_names_every_row_and_the_environment(result: dict[str, Any]) -> None:
    env = result["environment"]
    assert env["flwr"].startswith("1.") and env["cores"] >= 1 and env["cpu"]
    for row in result["rows"]:
        assert f"| {row['label']} |" in result["markdown"]
        assert row["defends_against"] in result["markdown"]
