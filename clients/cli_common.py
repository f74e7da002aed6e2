"""What every ``he-agg`` command shares: server and CA options, passphrases, key files,
and turning an error into one line on stderr (never a traceback for a user's mistake)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import typer

__all__ = [
    "CA_FILE",
    "FEDERATION_ID",
    "PASSPHRASE_ENV",
    "SERVER",
    "admin_client",
    "call",
    "fail",
    "parameter_set",
    "party_key",
    "passphrase",
    "public_file",
    "read_roster",
]

FEDERATION_ID = typer.Argument(..., help="the federation's id (as in its roster)")
SERVER = typer.Option("http://127.0.0.1:8750", "--server", help="aggregator base URL")
CA_FILE = typer.Option(
    None,
    "--ca-file",
    envvar="HE_AGG_CA_FILE",
    help="CA certificate (PEM) an https server's certificate must chain to; "
    "default: the system store",
)
PASSPHRASE_ENV = "HE_AGG_PASSPHRASE"


def passphrase(confirm: bool = False) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    return str(
        typer.prompt("passphrase for the key file", hide_input=True, confirmation_prompt=confirm)
    )


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and exit ``code``; with ``--debug``, the traceback of the error
    being handled too."""
    if "--debug" in sys.argv and sys.exc_info()[0] is not None:
        traceback.print_exc()
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def party_key(path: Path) -> Any:
    from he_agg.errors import HeAggError
    from keys.identity import load_identity

    if _is_public_key_file(path):
        fail(
            f"{path} is a public key file (.pub.json, what you hand to others); --key needs "
            f"the private .key file that `he-agg keys generate` wrote beside it"
        )
    try:
        return load_identity(path, passphrase())
    except HeAggError as exc:
        fail(str(exc))


def _is_public_key_file(path: Path) -> bool:
    if path.name.endswith(".pub.json"):
        return True
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and "signing_key" in record and "encryption_key" in record


def admin_client(server: str, key: Path, ca_file: Path | None = None) -> Any:
    from clients.admin import Admin

    return Admin(server, party_key(key).signing, verify=ca_file or True)


def call(action: Any) -> Any:
    """Run ``action``; any error he-agg raises on purpose becomes one line and exit 2."""
    from pydantic import ValidationError

    from he_agg.errors import HeAggError, ProtocolError, ServiceError, TransportError

    try:
        return action()
    except ServiceError as exc:
        fail(f"the server refused: {exc}")
    except TransportError as exc:  # unreachable, or a certificate the CA does not vouch for
        fail(str(exc))
    except ProtocolError as exc:  # what the server served fails a check: nothing was sent
        fail(f"refused: {exc}")
    except HeAggError as exc:
        fail(str(exc))
    except TimeoutError as exc:  # waited as long as asked (an OSError, but not the network)
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot reach the server: {exc}")
    except ValidationError as exc:
        fail(f"invalid request or response: {exc}")


def public_file(path: Path) -> dict[str, Any]:
    """A party's .pub.json, as written by ``he-agg keys generate``."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")


def read_roster(path: Path) -> Any:
    """A signed roster file, checked against its own admin signature (one line if not)."""
    from he_agg.errors import HeAggError
    from he_agg.roster import SignedRoster

    try:
        signed = SignedRoster.from_json(path.read_text())
        signed.verify()
    except OSError as exc:
        fail(f"cannot read the roster file {path}: {exc.strerror or exc}")
    except HeAggError as exc:
        fail(f"{path}: {exc}")
    return signed


def parameter_set(choice: str) -> Any:
    """'default', 'no-proofs', or a JSON file of ``ParameterSet.to_dict()`` (one line if
    it cannot be read or breaks a rule)."""
    from he_agg.errors import ParameterError
    from he_agg.params import DEFAULT, ParameterSet, derive_parameters

    if choice == "default":
        return DEFAULT
    if choice == "no-proofs":
        return derive_parameters("default-no-proofs", proofs=False)
    path = Path(choice)
    if not path.exists():
        fail(f"--parameters {choice!r}: not 'default' or 'no-proofs', and no such file")
    try:
        return ParameterSet.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        fail(f"cannot read the parameter set {path}: {exc}")
    except ParameterError as exc:
        fail(f"{path}: {exc}")
