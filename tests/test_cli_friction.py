"""What tripped a new user of the CLI: --version, help on every command and parameter,
`serve` saying where it listens only once it does, refused requests in the log, and
`client fetch` for anyone enrolled."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
from typer.main import get_command

from clients.cli import app
from clients.harness.server_process import free_port
from tests.test_cli_errors import _he_agg

_run = _he_agg  # the installed command, as a subprocess


def test_version(tmp_path: Path) -> None:
    result = _run("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("he-agg ")


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> list[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        found = []
        for name, sub in command.commands.items():
            found += _commands(sub, (*path, name))
        return found
    return [(" ".join(path), command)]


def test_every_command_and_parameter_has_help() -> None:
    commands = _commands(get_command(app))
    assert len(commands) >= 15 and "client fetch" in dict(commands)
    for name, command in commands:
        assert (command.help or "").strip(), f"{name} has no help"
        for parameter in command.params:
            text = getattr(parameter, "help", None)
            assert (text or "").strip(), f"{name}: {parameter.name} has no help"


def test_serve_says_where_it_listens_only_once_bound(tmp_path: Path) -> None:
    made = _run("keys", "generate", "admin", "--out", str(tmp_path), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    port = free_port()
    env = {**os.environ, "HE_AGG_PASSPHRASE": "pw"}
    command = [sys.executable, "-m", "clients.cli", "serve", "--port", str(port)]
    command += ["--admin", str(tmp_path / "admin.pub.json"), "--data-dir", str(tmp_path / "d")]
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        line = ""
        while "serving on" not in line:  # JSON log lines come first
            line = server.stderr.readline()
            assert line, "the server ended without saying where it serves"
        assert line.strip() == f"he-agg serving on http://127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it really listens by the time it says so
        # a second server on the same port fails with one line, and never says "serving"
        second = subprocess.run(
            [*command[:-2], "--data-dir", str(tmp_path / "e")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0 and "serving on" not in second.stderr
        assert "Traceback" not in second.stderr and "address already in use" in second.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_refuses_an_admin_file_that_is_not_a_public_key(tmp_path: Path) -> None:
    (tmp_path / "admin.pub.json").write_text(json.dumps({"name": "x"}))
    result = _run("serve", "--admin", str(tmp_path / "admin.pub.json"), cwd=tmp_path)
    assert result.returncode == 2 and "has no signing_key" in result.stderr
    result = _run("serve", "--admin", str(tmp_path / "missing.pub.json"), cwd=tmp_path)
    assert result.returncode == 2 and "missing.pub.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_refused_requests_are_logged_at_info(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from he_agg.server.app import create_app
    from he_agg.server.config import Settings

    log = tmp_path / "log"
    app_ = create_app(Settings(data_dir=tmp_path, log_level="INFO"))
    import logging

    handler = logging.FileHandler(log)
    logging.getLogger("he_agg").addHandler(handler)
    try:
        with TestClient(app_) as client:
            assert client.get("/v1/federations/x").status_code == 401
            started = time.monotonic()
            while "request refused" not in log.read_text() and time.monotonic() - started < 5:
                time.sleep(0.05)
    finally:
        logging.getLogger("he_agg").removeHandler(handler)
    assert "request refused" in log.read_text()


def test_parameter_sets_by_name_or_file_and_an_example_update(tmp_path: Path) -> None:
    import torch

    from clients.cli_common import parameter_set
    from he_agg.params import DEFAULT, ParameterSet

    written = tmp_path / "params.json"
    made = _run("params", "--k-max", "20", "--no-proofs", "--out", str(written), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    loaded = parameter_set(str(written))
    assert isinstance(loaded, ParameterSet) and loaded.k_max == 20 and not loaded.proofs
    assert parameter_set("default") == DEFAULT and not parameter_set("no-proofs").proofs
    (tmp_path / "bad.json").write_text('{"poly_degree": 3}')
    for choice, mention in (("nope", "no such file"), (str(tmp_path / "bad.json"), "bad.json")):
        refused = _run(
            "federation", "create", "f", "--client", "c.pub.json", "--admin-key", "a.key",
            "--parameters", choice, cwd=tmp_path,
        )  # fmt: skip
        assert refused.returncode == 2 and mention in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    out = tmp_path / "bank1.pt"
    wrote = _run("client", "example-update", str(out), "--seed", "1", cwd=tmp_path)
    assert wrote.returncode == 0 and "25 parameters" in wrote.stdout  # 24 weights + a bias
    state = torch.load(out, weights_only=True)
    assert sum(t.numel() for t in state.values()) == 25


def test_messages_count_their_nouns_and_name_the_field(tmp_path: Path) -> None:
    """'only 1 upload', not 'only 1 uploads'; a refused body names the field it is about
    and never starts with an empty location (': Value error, …')."""
    from fastapi.testclient import TestClient

    from he_agg.api.transport import SignedClient
    from he_agg.server.app import create_app
    from he_agg.server.config import Settings
    from he_agg.wording import counted
    from keys.identity import Identity

    assert [counted(n, "upload") for n in (0, 1, 2)] == ["0 uploads", "1 upload", "2 uploads"]
    assert counted(1, "member") == "1 member" and counted(3, "party", "parties") == "3 parties"
    admin = Identity.generate(0)
    settings = Settings(data_dir=tmp_path, admin_keys=[admin.public.signing_key.hex()])
    clients = [{"name": "c", "signing_key": "ab" * 32}]
    field = {"id": "f", "mode": "plaintext", "threshold": 1, "k_min": 0, "clients": clients}
    whole = {"id": "g", "threshold": 3, "k_min": 1, "clients": clients, "members": []}
    details = []
    with TestClient(create_app(settings)) as client:
        for spec in (field, whole):
            body = json.dumps(spec).encode()
            signer = SignedClient("http://x", admin.signing)
            headers = signer.headers("POST", "/v1/federations", body)
            headers["content-type"] = "application/json"
            response = client.post("/v1/federations", content=body, headers=headers)
            assert response.status_code == 422
            details.append(response.json()["detail"])
    assert details[0].startswith("k_min: "), details  # a field's error names the field
    assert "threshold must be at most" in details[1] and not details[1].startswith(":")
