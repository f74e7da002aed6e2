"""Fixtures for the store tests: each backend, empty and migrated, for every test.

``store`` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (a fresh
schema on the session's throwaway cluster, from :mod:`tests.pg`), through the
``database_url`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from he_agg.server.store import SqlStore


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    opened = SqlStore(database_url)
    yield opened
    opened.close()
