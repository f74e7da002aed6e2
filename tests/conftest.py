"""Shared fixtures: parameter sets, SEAL helpers and one committee per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from he_agg.params import DEFAULT, ParameterSet, derive_parameters
from he_agg.server.store import sqlite_url
from keys.committee import CommitteeSetup, run_committee_setup
from tests.pg import PostgresCluster, shared_cluster

# No per-example deadline (hypothesis's default is 200 ms): on a loaded 2-core machine one
# pause of the process would fail a property that holds. The examples' count is per test.
settings.register_profile("he-agg", deadline=None)
settings.load_profile("he-agg")


@pytest.fixture(scope="session", autouse=True)
def _own_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The SDK's default upload spool lives under $XDG_CACHE_HOME: each test session gets
    its own (inherited by the CLI processes it starts), so that an upload spooled by an
    earlier or a concurrent run, under another key, is never re-sent by this one."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def params() -> ParameterSet:
    return DEFAULT


@pytest.fixture(scope="session")
def e2e_params() -> ParameterSet:
    """Sized for the end-to-end test: at most 16 clients, sums below 2^15."""
    return derive_parameters("test-e2e", k_max=16, value_bits=15, proofs=False)


@pytest.fixture(scope="session")
def committee(params: ParameterSet) -> CommitteeSetup:
    return run_committee_setup(params, "test-federation", members=5, threshold=3)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL 15 cluster for the session (fails in CI if it cannot start)."""
    with shared_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: the store's contract holds on both."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "store.db")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_schema_url()
