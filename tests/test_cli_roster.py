"""The roster on the command line: create writes it, fingerprint shows it, pin checks it,
and a client without a pinned roster is refused with one line before anything leaves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clients.cli import app
from clients.harness import ServerProcess
from he_agg.roster import SignedRoster

runner = CliRunner()


def _keys(folder: Path, name: str, index: int = 0) -> Path:
    args = ["keys", "generate", name, "--out", str(folder)]
    result = runner.invoke(app, [*args, "--index", str(index)] if index else args)
    assert result.exit_code == 0, result.output
    return folder / f"{name}.pub.json"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    monkeypatch.setenv("HE_AGG_PASSPHRASE", "pw")
    keys = tmp_path / "keys"
    admin = json.loads(_keys(keys, "admin").read_text())["signing_key"]
    server = ServerProcess(tmp_path / "server", [admin])
    server.start()
    yield keys, server.url
    server.stop()


def _create(keys: Path, url: str, out: Path) -> SignedRoster:
    clients = [_keys(keys, f"bank-{i}") for i in (1, 2)]
    members = [_keys(keys, f"member-{i}", i) for i in (1, 2, 3)]
    args = ["federation", "create", "fed", "--threshold", "2", "--k-min", "2"]
    args += [a for c in clients for a in ("--client", str(c))]
    args += [a for m in members for a in ("--member", str(m))]
    args += ["--admin-key", str(keys / "admin.key"), "--server", url, "--roster-out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    signed = SignedRoster.from_json(out.read_text())
    assert signed.roster.fingerprint in result.output
    return signed


def test_create_fingerprint_and_pin(served: tuple[Path, str], tmp_path: Path) -> None:
    keys, url = served
    roster_file = tmp_path / "fed.roster.json"
    signed = _create(keys, url, roster_file)
    shown = runner.invoke(app, ["federation", "fingerprint", str(roster_file)])
    assert shown.exit_code == 0 and signed.roster.fingerprint in shown.output
    assert "2 clients; 3 members, t = 2" in shown.output

    wrong = signed.roster.fingerprint[:-1] + ("A" if signed.roster.fingerprint[-1] != "A" else "B")
    refused = runner.invoke(
        app, ["federation", "pin", str(roster_file), "--fingerprint", wrong, "--into", "x"]
    )
    assert refused.exit_code == 2 and "does not match" in refused.output
    pinned = tmp_path / "pinned"
    spoken = signed.roster.fingerprint.lower().replace("-", " ")  # as read aloud
    ok = runner.invoke(
        app,
        ["federation", "pin", str(roster_file), "--fingerprint", spoken, "--into", str(pinned)],
    )
    assert ok.exit_code == 0, ok.output
    assert SignedRoster.from_json((pinned / "fed.roster.json").read_text()) == signed

    exported = tmp_path / "again.json"
    args = ["federation", "export", "fed", "--admin-key", str(keys / "admin.key")]
    again = runner.invoke(app, [*args, "--server", url, "--out", str(exported)])
    assert again.exit_code == 0, again.output
    assert SignedRoster.from_json(exported.read_text()) == signed


def test_a_tampered_roster_file_is_refused_in_one_line(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    keys, url = served
    roster_file = tmp_path / "fed.roster.json"
    _create(keys, url, roster_file)
    text = json.loads(roster_file.read_text())
    text["roster"]["k_min"] = 1
    roster_file.write_text(json.dumps(text))
    result = runner.invoke(app, ["federation", "fingerprint", str(roster_file)])
    assert result.exit_code == 2
    assert "not signed by its admin key" in result.output and "Traceback" not in result.output


def test_a_client_without_a_pinned_roster_does_not_encrypt(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    keys, url = served
    _create(keys, url, tmp_path / "fed.roster.json")
    update = tmp_path / "update.npz"
    import numpy as np

    np.savez(update, w=np.ones(3, dtype=np.float32))
    args = ["client", "submit", "fed", "--update", str(update), "--samples", "10", "--round", "1"]
    args += ["--key", str(keys / "bank-1.key"), "--name", "bank-1", "--server", url]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "no pinned roster" in result.output and "Traceback" not in result.output
