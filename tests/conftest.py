"""Shared fixtures: parameter sets, SEAL helpers and one committee per session."""

from __future__ import annotations

import pytest

from he_agg.params import DEFAULT, ParameterSet, derive_parameters
from keys.committee import CommitteeSetup, run_committee_setup


@pytest.fixture(scope="session")
def params() -> ParameterSet:
    return DEFAULT


@pytest.fixture(scope="session")
def e2e_params() -> ParameterSet:
    """Sized for the end-to-end test: at most 16 clients, sums below 2^15."""
    return derive_parameters("test-e2e", k_max=16, value_bits=15)


@pytest.fixture(scope="session")
def committee(params: ParameterSet) -> CommitteeSetup:
    return run_committee_setup(params, "test-federation", members=5, threshold=3)
