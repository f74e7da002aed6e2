"""A data directory written before the store redesign is served by today's code.

``tests/fixtures/legacy_f98981c`` was written by the code of commit f98981c (its README
has the script): a plaintext federation with round 1 published and round 2 open with
one upload. The server migrates it in place on start; nothing is lost, and the open
round finishes. A database from a newer he-agg is refused with one clear line.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.admin import Admin
from clients.harness import ServerProcess
from clients.participant import Participant
from he_agg.api.states import RoundState
from he_agg.packing import flatten
from he_agg.server.store.migrations import alembic_config

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_f98981c"
X = np.array([0.5, -1.0, 2.0])  # the update every legacy upload scaled


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


@pytest.fixture
def legacy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(FIXTURE, target, ignore=shutil.ignore_patterns("README.md"))
    return target


@pytest.fixture
def server(legacy_dir: Path) -> Iterator[tuple[ServerProcess, Ed25519PrivateKey]]:
    admin = Ed25519PrivateKey.generate()
    public = admin.public_key().public_bytes_raw().hex()
    process = ServerProcess(legacy_dir, [public])
    process.start()
    yield process, admin
    process.stop()


def test_a_legacy_database_keeps_its_rounds_and_uploads(
    server: tuple[ServerProcess, Ed25519PrivateKey], legacy_dir: Path
) -> None:
    process, admin_key = server
    with Admin(process.url, admin_key) as admin:
        first = admin.round("legacy", 1)
        assert first.state == RoundState.PUBLISHED and first.uploads == ["bank-1", "bank-2"]
        model = admin.model("legacy", 1)
        assert np.allclose(flatten(model)[0], 2.5 * X)  # (10·x + 30·3x) / 40
        second = admin.round("legacy", 2)
        assert second.state == RoundState.OPEN and second.uploads == ["bank-1"]
    with Participant(process.url, "legacy", "bank-2", _key(2), show_progress=False) as bank:
        bank.submit({"w": (4.0 * X).astype(np.float32)}, 15.0, round=2)
        finished = bank.wait_for_model(2, timeout=30)
    assert np.allclose(flatten(finished)[0], (5 * 2 * X + 15 * 4 * X) / 20)
    with sqlite3.connect(legacy_dir / "he-agg.sqlite3") as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        epochs = db.execute("SELECT federation, epoch, roster, retired FROM epochs").fetchall()
        round_epochs = db.execute("SELECT number, epoch FROM rounds ORDER BY number").fetchall()
    assert revision == ScriptDirectory.from_config(alembic_config()).get_current_head()
    # 0004 gave the federation its one key epoch (no roster: made before rosters) and put
    # every round, the new one included, under it
    assert epochs == [("legacy", 0, "", None)]
    assert round_epochs == [(1, 0), (2, 0)]


def _dump(database: Path) -> list[str]:
    with sqlite3.connect(database) as db:
        return list(db.iterdump())


def test_serve_refuses_a_schema_newer_than_it_knows(legacy_dir: Path) -> None:
    database = legacy_dir / "he-agg.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    before = _dump(database)
    admin = legacy_dir / "admin.pub.json"
    admin.write_text('{"signing_key": "' + "ab" * 32 + '"}')
    result = subprocess.run(
        [
            *(sys.executable, "-m", "clients.cli", "serve"),
            *("--data-dir", str(legacy_dir), "--admin", str(admin), "--port", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "newer than this he-agg" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert _dump(database) == before  # not migrated, not written
