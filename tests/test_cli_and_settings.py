import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clients.cli import app
from he_agg.server.config import Settings
from keys.identity import load_identity

runner = CliRunner()


def test_keys_generate_writes_an_encrypted_key_and_a_public_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HE_AGG_PASSPHRASE", "pw")
    result = runner.invoke(
        app, ["keys", "generate", "member-2", "--index", "2", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    public = json.loads((tmp_path / "member-2.pub.json").read_text())
    assert public["index"] == 2 and len(public["signing_key"]) == 64
    key = tmp_path / "member-2.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    identity = load_identity(key, "pw")
    assert identity.index == 2 and identity.public.signing_key.hex() == public["signing_key"]
    again = runner.invoke(app, ["keys", "generate", "member-2", "--out", str(tmp_path)])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output


def test_client_submit_reports_a_missing_file_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HE_AGG_PASSPHRASE", "pw")
    result = runner.invoke(
        app,
        [
            "client",
            "submit",
            "f",
            "--update",
            str(tmp_path / "no.pt"),
            "--samples",
            "3",
            "--key",
            "k",
            "--name",
            "bank",
        ],
    )
    assert result.exit_code == 2 and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_params_command_prints_a_valid_set() -> None:
    result = runner.invoke(app, ["params", "--k-max", "100", "--value-bits", "14", "--no-proofs"])
    assert result.exit_code == 0
    described = json.loads(result.output)
    assert described["N"] == 4096 and described["K_max"] == 100
    proven = runner.invoke(app, ["params", "--k-max", "100", "--value-bits", "14"])
    assert proven.exit_code == 0 and json.loads(proven.output)["N"] == 8192  # proofs: default


def test_settings_come_from_toml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "he-agg.toml"
    config.write_text('port = 9001\ndata_dir = "/srv/he-agg"\nadmin_keys = ["ab"]\n')
    monkeypatch.setenv("HE_AGG_CONFIG", str(config))
    settings = Settings()
    assert settings.port == 9001 and str(settings.data_dir) == "/srv/he-agg"
    monkeypatch.setenv("HE_AGG_PORT", "9002")  # the environment wins over the file
    assert Settings().port == 9002 and Settings().admin_keys == ["ab"]
