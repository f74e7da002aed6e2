"""The finance pilot: its data loaders' errors, and a short run of the whole thing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from clients.cli import app
from clients.pilot import PilotConfig, PilotDataError, load_csv, load_lending_club, run_pilot


def _loans(path: Path, rows: int = 400, **changes: object) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "amount": rng.integers(1000, 40000, rows),
            "income": rng.normal(60000, 20000, rows).round(),
            "purpose": rng.choice(["car", "home", "debt"], rows),
            "region": rng.choice(["north", "south", "east"], rows),
            "default": (rng.random(rows) < 0.2).astype(int),
        }
    )
    for column, value in changes.items():
        frame[column] = value
    frame.to_csv(path, index=False)
    return path


def test_csv_loader_encodes_features_and_banks(tmp_path: Path) -> None:
    data = load_csv(_loans(tmp_path / "loans.csv"), "default", "region")
    assert data.bank_names == ["east", "north", "south"]
    assert "purpose=car" in data.features and "amount" in data.features
    assert len(data.train) + len(data.test) == 400
    assert set(np.concatenate([data.bank_rows(b) for b in data.bank_names])) == set(data.train)


def test_csv_loader_errors_are_clear(tmp_path: Path) -> None:
    path = _loans(tmp_path / "loans.csv")
    with pytest.raises(PilotDataError, match="column 'defaulted' is not in"):
        load_csv(path, "defaulted", "region")
    with pytest.raises(PilotDataError, match="column 'bank' is not in"):
        load_csv(path, "default", "bank")
    three = _loans(tmp_path / "three.csv", default=np.arange(400) % 3)
    with pytest.raises(PilotDataError, match="must be binary"):
        load_csv(three, "default", "region")
    gaps = _loans(tmp_path / "gaps.csv", region=["north"] * 399 + [""])
    with pytest.raises(PilotDataError, match="1 rows have an empty 'region'"):
        load_csv(gaps, "default", "region")
    one_bank = _loans(tmp_path / "one.csv", region="north")
    with pytest.raises(PilotDataError, match="at least two banks"):
        load_csv(one_bank, "default", "region")
    with pytest.raises(PilotDataError, match="does not exist"):
        load_csv(tmp_path / "missing.csv", "default", "region")


def test_cli_reports_csv_errors_without_a_traceback(tmp_path: Path) -> None:
    path = _loans(tmp_path / "loans.csv")
    result = CliRunner().invoke(
        app,
        [
            "pilot",
            "--csv",
            str(path),
            "--target",
            "nope",
            "--bank-column",
            "region",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "column 'nope' is not in" in result.output
    assert "Traceback" not in result.output


def test_lending_club_split_is_non_iid_across_five_banks() -> None:
    data = load_lending_club()
    assert len(data.bank_names) == 5 and data.x.shape == (9857, 24)
    rates = [data.y[data.bank_rows(b)].mean() for b in data.bank_names]
    assert max(rates) - min(rates) > 0.01  # default rates differ by region


def test_short_pilot_runs_end_to_end_over_http(tmp_path: Path) -> None:
    config = PilotConfig(out=tmp_path / "report", rounds=3, dp_noise=(1.0,))
    result = run_pilot(config)
    for name in ("logistic", "mlp"):
        he, plain = result.he[name][-1]["auc"], result.plain[name].rounds[-1].metrics["auc"]
        assert abs(he - plain) <= 1e-4 and he > 0.65
    assert all(result.checks.values()), result.checks
    report = (tmp_path / "report" / "report.md").read_text()
    assert "HE-FedAvg" in report and "| Round | Stage |" in report
    for plot in ("auc_per_round.png", "roc.png", "auc_vs_epsilon.png"):
        assert (tmp_path / "report" / plot).read_bytes().startswith(b"\x89PNG")
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert len(saved["he"]["logistic"]) == 3 and saved["timings"]
