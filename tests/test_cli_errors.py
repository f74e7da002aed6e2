"""The CLI never prints a traceback for a user's mistake: an unreachable server, a missing
or wrong file, a non-numeric or out-of-range number, an update that is not a tensor file.
Each is run as the installed command would run (a subprocess), and must end with one clear
line and a non-zero exit; ``--debug`` shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _he_agg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HE_AGG_PASSPHRASE": "pw"}
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-errors")
    made = _he_agg("keys", "generate", "bank-1", "--out", str(root), cwd=root)
    assert made.returncode == 0, made.stderr
    (root / "not-a-key.key").write_text("hello")
    (root / "not-a-tensor.pt").write_bytes(b"not a tensor file")
    (root / "empty.npz").write_bytes(b"PK\x03\x04 broken zip")
    return root


CASES = {
    "unreachable server": (
        ["round", "open", "f", "--admin-key", "{root}/bank-1.key",
         "--server", "http://127.0.0.1:9"],
        "refused",
    ),
    "missing key file": (
        ["round", "open", "f", "--admin-key", "{root}/missing.key"],
        "missing.key",
    ),
    "a key file that is not one": (
        ["round", "open", "f", "--admin-key", "{root}/not-a-key.key"],
        "not-a-key.key",
    ),
    "non-numeric number": (
        ["round", "open", "f", "--deadline", "soon", "--admin-key", "k"],
        "--deadline",
    ),
    "out-of-range number": (["demo", "--clients", "0"], "--clients"),
    "an update that is not a tensor file": (
        ["client", "submit", "f", "--update", "{root}/not-a-tensor.pt", "--samples", "3",
         "--key", "{root}/bank-1.key", "--name", "bank-1"],
        "not-a-tensor.pt",
    ),
    "a broken npz": (
        ["client", "submit", "f", "--update", "{root}/empty.npz", "--samples", "3",
         "--key", "{root}/bank-1.key", "--name", "bank-1"],
        "empty.npz",
    ),
    "a public key file given as --key": (
        ["round", "open", "f", "--admin-key", "{root}/bank-1.pub.json"],
        "is a public key file",
    ),
    "fetching from an unreachable server": (
        ["client", "fetch", "f", "--key", "{root}/bank-1.key", "--server", "http://127.0.0.1:9"],
        "127.0.0.1:9",
    ),
    "keys generate with an index out of range": (
        ["keys", "generate", "m", "--index", "300", "--out", "{root}"],
        "--index",
    ),
    "a roster file that is not one": (
        ["federation", "fingerprint", "{root}/not-a-tensor.pt"],
        "not-a-tensor.pt",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_error_is_one_line_without_a_traceback(folder: Path, case: str) -> None:
    args, mention = CASES[case]
    result = _he_agg(*(a.format(root=folder) for a in args), cwd=folder)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert mention in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode == 2:  # click's usage error: its message and a short usage block
        assert lines and len(lines) <= 10, output
    else:
        assert len(lines) == 1, output  # one clear line


def test_debug_shows_the_traceback(folder: Path) -> None:
    args = ["--debug", "client", "submit", "f", "--update", f"{folder}/not-a-tensor.pt"]
    args += ["--samples", "3", "--key", f"{folder}/bank-1.key", "--name", "bank-1"]
    result = _he_agg(*args, cwd=folder)
    assert result.returncode != 0 and "Traceback" in result.stderr
