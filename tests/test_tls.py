"""TLS end to end: ``he-agg serve`` (and the harness's server) on https with a throwaway CA;
the SDK, the CLI and member agents verify it against the CA file and refuse anything else
with one clear line. One full CKKS round runs over https with member processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography import x509
from typer.testing import CliRunner

from clients.admin import Admin
from clients.cli import app
from clients.harness import LocalFederation, ServerProcess, federation_spec, free_port
from clients.harness.tls import make_test_ca
from clients.participant import Participant
from he_agg.api.states import FederationMode, RoundState
from he_agg.api.transport import SignedClient, ssl_context
from he_agg.errors import TransportError
from he_agg.packing import flatten
from he_agg.params import derive_parameters
from keys.identity import Identity, save_identity

FED = "tls-plain"
PASSPHRASE = "tls test"


@dataclass
class Served:
    server: ServerProcess
    ca: Path
    admin: Identity
    admin_key: Path  # the admin's encrypted key file, for the CLI
    banks: dict[str, Identity]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A TLS server with a plaintext federation (no committee needed) and round 1 open."""
    tmp = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_test_ca(tmp / "ca")
    admin = Identity.generate(0)
    banks = {name: Identity.generate(0) for name in ("bank-1", "bank-2")}
    server = ServerProcess(
        tmp / "server", [admin.public.signing_key.hex()], tls=(cert, key), ca_file=ca
    )
    server.start()
    admin_key = tmp / "admin.key"
    save_identity(admin_key, admin, PASSPHRASE)
    spec = federation_spec(
        FED, {n: i.public for n, i in banks.items()}, mode=FederationMode.PLAINTEXT
    )
    with Admin(server.url, admin.signing, verify=ca) as sdk:
        sdk.create_federation(spec)
        sdk.open_round(FED, deadline_seconds=600)
    yield Served(server, ca, admin, admin_key, banks)
    server.stop()


def test_the_test_ca_signs_a_server_certificate_for_loopback(tmp_path: Path) -> None:
    ca_path, cert_path, key_path = make_test_ca(tmp_path)
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca)  # raises unless the CA's key signed it
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_path.read_bytes() and b"PRIVATE" not in ca_path.read_bytes()


def test_the_sdk_trusts_the_ca_it_is_given(served: Served) -> None:
    assert served.server.url.startswith("https://127.0.0.1:")
    with Admin(served.server.url, served.admin.signing, verify=served.ca) as admin:
        info = admin.federation(FED)
        assert info.id == FED and info.config.mode == FederationMode.PLAINTEXT
        assert admin.round(FED, 1).state == RoundState.OPEN
    localhost = served.server.url.replace("127.0.0.1", "localhost")  # the DNS name in the SAN
    with SignedClient(localhost, served.admin.signing, verify=served.ca) as client:
        assert client.request("GET", "/health").json() == {"status": "ok"}


def test_a_certificate_the_ca_does_not_vouch_for_is_refused_at_once(
    served: Served, tmp_path: Path
) -> None:
    other_ca, _, _ = make_test_ca(tmp_path / "other")
    for verify in (True, other_ca):  # the system store, and another CA
        started = time.monotonic()
        admin = Admin(served.server.url, served.admin.signing, verify=verify)
        with admin, pytest.raises(TransportError, match="certificate") as caught:
            admin.federation(FED)
        assert caught.value.tls and "--ca-file" in str(caught.value)
        assert time.monotonic() - started < 5  # a verification failure is not retried
    with pytest.raises(TransportError, match="cannot read the CA file"):
        Participant(served.server.url, FED, "bank-1", served.admin.signing, verify=tmp_path / "no")


def test_plain_http_to_the_tls_port_fails(served: Served) -> None:
    plain = served.server.url.replace("https://", "http://")
    client = SignedClient(plain, served.admin.signing, retries=0)
    with client, pytest.raises(TransportError, match="https://") as caught:
        client.request("GET", "/health")
    assert not caught.value.tls
    with pytest.raises(httpx.TransportError):  # and the server answers nothing in the clear
        httpx.get(f"{plain}/health", timeout=5)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m clients.cli ARGS`` in a child, without the caller's HE_AGG_CA_FILE."""
    env = {k: v for k, v in os.environ.items() if k != "HE_AGG_CA_FILE"}
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        env={**env, "HE_AGG_PASSPHRASE": PASSPHRASE},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_verifies_with_ca_file_and_fails_in_one_line_without(served: Served) -> None:
    status = ["round", "status", FED, "1", "--admin-key", str(served.admin_key)]
    status += ["--server", served.server.url]
    trusted = _cli(*status, "--ca-file", str(served.ca))
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["state"] == "open"
    refused = _cli(*status)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: ") and "certificate" in refused.stderr
    from_env = CliRunner().invoke(
        app,
        status,
        env={"HE_AGG_CA_FILE": str(served.ca), "HE_AGG_PASSPHRASE": PASSPHRASE},
    )
    assert from_env.exit_code == 0, from_env.output


def test_committee_run_stops_on_an_untrusted_certificate(served: Served, tmp_path: Path) -> None:
    member = tmp_path / "member.key"
    save_identity(member, Identity.generate(1), PASSPHRASE)
    run = ["committee", "run", FED, "--key", str(member), "--state-dir", str(tmp_path / "s")]
    result = _cli(*run, "--server", served.server.url)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "certificate" in result.stderr.splitlines()[-1]


def test_serve_over_tls_and_its_one_line_refusals(tmp_path: Path) -> None:
    ca, cert, key = make_test_ca(tmp_path / "ca")
    admin = tmp_path / "admin.pub.json"
    admin.write_text(json.dumps({"signing_key": Identity.generate(0).public.signing_key.hex()}))
    base = ["serve", "--admin", str(admin), "--data-dir", str(tmp_path / "data")]
    refusals = {
        "give both or neither": ["--tls-cert", str(cert)],
        "cannot read the TLS key": ["--tls-cert", str(cert), "--tls-key", str(tmp_path / "x")],
        "do not load as a pair": ["--tls-cert", str(cert), "--tls-key", str(ca)],
        "refusing plain http on 0.0.0.0": ["--host", "0.0.0.0"],
    }
    for message, extra in refusals.items():
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("\n") == 1
    port = free_port()
    command = [sys.executable, "-m", "clients.cli", *base, "--port", str(port)]
    command += ["--tls-cert", str(cert), "--tls-key", str(key)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = ""
        while "serving on" not in line:  # the JSON startup log lines come first
            line = process.stderr.readline()
            assert line, "the server ended without saying where it serves"
        assert f"https://127.0.0.1:{port}" in line
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"https://127.0.0.1:{port}/health", verify=ssl_context(ca))
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert response.json() == {"status": "ok"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_full_round_over_tls_with_member_processes(tmp_path: Path) -> None:
    params = derive_parameters("tls-test", k_max=4, committee_max=3, value_bits=12, proofs=False)
    banks = ["bank-1", "bank-2"]
    local = LocalFederation(
        tmp_path, "tls-round", banks, params=params, members=2, threshold=2, tls=True
    )
    local.start(timeout=120)  # the members run `he-agg committee run --ca-file …`
    try:
        assert local.server.url.startswith("https://") and local.ca_file is not None
        number = local.admin_api().open_round("tls-round", deadline_seconds=120).number
        rng = np.random.default_rng(7)
        updates = [({"w": rng.uniform(-1, 1, 40)}, n) for n in (10, 30)]
        for name, (update, samples) in zip(banks, updates, strict=True):
            with local.participant(name) as participant:
                participant.submit(update, samples, round=number)
        with local.participant(banks[0]) as participant:
            model = participant.wait_for_model(number, timeout=60, poll=0.1)
        expected = np.average([u["w"] for u, _ in updates], axis=0, weights=[10, 30])
        assert np.abs(flatten(model)[0] - expected).max() < 1e-4
    finally:
        local.stop()
