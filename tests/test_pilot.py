"""The finance pilot: its data loaders' errors, and a short run of the whole thing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from clients.cli import app
from clients.pilot import (
    CsvSpec,
    PilotConfig,
    PilotDataError,
    load_csv,
    load_lending_club,
    run_pilot,
)


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
    data = load_csv(CsvSpec(_loans(tmp_path / "loans.csv"), "default", "region"))
    assert data.bank_names == ["east", "north", "south"]
    assert "purpose=car" in data.features and "amount" in data.features
    assert len(data.train) + len(data.test) == 400
    assert set(np.concatenate([data.bank_rows(b) for b in data.bank_names])) == set(data.train)


def test_csv_loader_errors_are_clear(tmp_path: Path) -> None:
    path = _loans(tmp_path / "loans.csv")
    with pytest.raises(PilotDataError, match="column 'defaulted' is not in"):
        load_csv(CsvSpec(path, "defaulted", "region"))
    with pytest.raises(PilotDataError, match="column 'bank' is not in"):
        load_csv(CsvSpec(path, "default", "bank"))
    three = _loans(tmp_path / "three.csv", default=np.arange(400) % 3)
    with pytest.raises(PilotDataError, match="must be binary"):
        load_csv(CsvSpec(three, "default", "region"))
    gaps = _loans(tmp_path / "gaps.csv", region=["north"] * 399 + [""])
    with pytest.raises(PilotDataError, match="1 rows have an empty 'region'"):
        load_csv(CsvSpec(gaps, "default", "region"))
    one_bank = _loans(tmp_path / "one.csv", region="north")
    with pytest.raises(PilotDataError, match="at least two banks"):
        load_csv(CsvSpec(one_bank, "default", "region"))
    with pytest.raises(PilotDataError, match="does not exist"):
        load_csv(CsvSpec(tmp_path / "missing.csv", "default", "region"))


def test_the_positive_class_is_never_guessed(tmp_path: Path) -> None:
    """A 0/1 or boolean target models 1/True; any other two labels need --positive, and the
    source line names the class the model predicts."""
    rng = np.random.default_rng(1)
    labels = np.where(rng.random(400) < 0.3, "bad", "good")
    words = _loans(tmp_path / "words.csv", default=labels)
    with pytest.raises(PilotDataError, match="--positive"):
        load_csv(CsvSpec(words, "default", "region"))
    good = load_csv(CsvSpec(words, "default", "region", positive="good"))
    bad = load_csv(CsvSpec(words, "default", "region", positive="bad"))
    assert int(good.y.sum()) == int((labels == "good").sum())
    assert int(bad.y.sum()) == int((labels == "bad").sum())
    assert "positive class 'bad'" in bad.source and bad.positive_noun == "default = bad"
    with pytest.raises(PilotDataError, match="not a value of 'default'"):
        load_csv(CsvSpec(words, "default", "region", positive="ugly"))
    flags = _loans(tmp_path / "flags.csv", default=labels == "bad")  # True/False in the file
    assert np.array_equal(load_csv(CsvSpec(flags, "default", "region")).y, labels == "bad")
    numbers = load_csv(CsvSpec(_loans(tmp_path / "n.csv"), "default", "region"))
    assert numbers.positive_noun == "default = 1" and numbers.rows_noun == "rows"


def test_bank_floor_imputation_and_column_clashes(tmp_path: Path) -> None:
    path = _loans(tmp_path / "loans.csv")
    with pytest.raises(PilotDataError, match="both the target and the bank column"):
        load_csv(CsvSpec(path, "region", "region"))
    small = _loans(tmp_path / "small.csv", region=["tiny"] * 5 + ["north", "south"] * 197 + ["x"])
    with pytest.raises(PilotDataError, match=r"fewer than 10 training rows: 'tiny' \(\d\)"):
        load_csv(CsvSpec(small, "default", "region"))
    assert "tiny" in load_csv(CsvSpec(small, "default", "region", min_bank_rows=1)).bank_names
    rng = np.random.default_rng(3)
    income = rng.normal(60000, 20000, 400).round()
    income[::7] = np.nan
    gaps = _loans(tmp_path / "gaps.csv", income=income)
    with pytest.raises(PilotDataError, match=r"missing values: income;.*--impute median"):
        load_csv(CsvSpec(gaps, "default", "region"))
    filled = load_csv(CsvSpec(gaps, "default", "region", impute="median"))
    assert np.isfinite(filled.x).all()
    column = filled.features.index("income")
    north = np.flatnonzero(filled.banks == "north")
    frame = pd.read_csv(gaps)
    median = float(frame.loc[frame.region == "north", "income"].median())
    hole = next(r for r in north if np.isnan(income[r]))
    assert filled.x[hole, column] == pytest.approx(np.sign(median) * np.log1p(abs(median)))
    never = _loans(tmp_path / "never.csv", default=np.where(frame.region == "east", 0, 1))
    warned = load_csv(CsvSpec(never, "default", "region"))
    assert [w for w in warned.warnings if "'east'" in w and "no 'default = 1' rows" in w]


def test_csv_only_options_without_a_csv_are_refused(tmp_path: Path) -> None:
    for option in (["--target", "default"], ["--bank-column", "region"], ["--positive", "1"]):
        result = CliRunner().invoke(app, ["pilot", *option, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and "only apply to --csv" in result.output
        assert "Traceback" not in result.output


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
