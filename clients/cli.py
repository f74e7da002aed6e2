"""The ``he-agg`` command line: serve, keys, federation, round, client, committee, pilot,
bench, demo, params. It sits on top of every layer (server, committee, SDK and apps), so
it lives here rather than in the core; imports are lazy to keep ``--help`` fast."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import typer

__all__ = ["app"]

app = typer.Typer(
    help="he-agg: privacy-preserving aggregation for federated learning.", no_args_is_help=True
)
keys_app = typer.Typer(help="Party keys (Ed25519 to sign, X25519 to receive shares).")
federation_app = typer.Typer(help="Administer federations.")
round_app = typer.Typer(help="Open, inspect and close rounds.")
client_app = typer.Typer(help="A client's commands.")
committee_app = typer.Typer(help="A committee member's commands.")
app.add_typer(keys_app, name="keys")
app.add_typer(federation_app, name="federation")
app.add_typer(round_app, name="round")
app.add_typer(client_app, name="client")
app.add_typer(committee_app, name="committee")

SERVER = typer.Option("http://127.0.0.1:8750", "--server", help="aggregator base URL")
PASSPHRASE_ENV = "HE_AGG_PASSPHRASE"


def _passphrase(confirm: bool = False) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    return str(
        typer.prompt("passphrase for the key file", hide_input=True, confirmation_prompt=confirm)
    )


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _identity(path: Path) -> Any:
    from he_agg.errors import HeAggError
    from keys.identity import load_identity

    try:
        return load_identity(path, _passphrase())
    except HeAggError as exc:
        _fail(str(exc))


@app.command()
def serve(
    host: str | None = typer.Option(None, help="bind address (default 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (default 8750)"),
    data_dir: Path | None = typer.Option(None, help="SQLite and blob folder (./he-agg-data)"),
    database: str | None = typer.Option(
        None, help="database URL: sqlite:///PATH (default: in --data-dir) or postgresql://…"
    ),
    admin: list[Path] = typer.Option([], "--admin", help="an admin's .pub.json (repeatable)"),
) -> None:
    """Run the aggregator under uvicorn. Settings also come from HE_AGG_* or HE_AGG_CONFIG."""
    import uvicorn

    from he_agg.server import Settings, create_app

    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    if data_dir:
        overrides["data_dir"] = data_dir
    if database:
        overrides["database"] = database
    settings = Settings(**overrides)
    if admin:
        keys = [json.loads(p.read_text())["signing_key"] for p in admin]
        settings.admin_keys = [*settings.admin_keys, *keys]
    if not settings.admin_keys:
        _fail("no admin key: pass --admin admin.pub.json or set HE_AGG_ADMIN_KEYS")
    from he_agg.errors import HeAggError

    try:
        application = create_app(settings)  # opens the store: migrates, or refuses a newer one
    except HeAggError as exc:
        _fail(str(exc))
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="warning")


@keys_app.command("generate")
def keys_generate(
    name: str = typer.Argument(..., help="party name, e.g. bank-1 or member-2"),
    out: Path = typer.Option(Path("."), help="folder for NAME.key and NAME.pub.json"),
    index: int = typer.Option(0, help="committee index (1..255) for members; 0 otherwise"),
) -> None:
    """Generate a party's keys: NAME.key (encrypted, 0600) and NAME.pub.json (public)."""
    from keys.identity import Identity, save_identity

    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / f"{name}.key", out / f"{name}.pub.json"
    if key_path.exists():
        _fail(f"{key_path} exists; refusing to overwrite a key")
    identity = Identity.generate(index)
    save_identity(key_path, identity, _passphrase(confirm=True))
    public = identity.public
    record: dict[str, Any] = {
        "name": name,
        "signing_key": public.signing_key.hex(),
        "encryption_key": public.encryption_key.hex(),
    }
    if index:
        record["index"] = index
    pub_path.write_text(json.dumps(record, indent=2) + "\n")
    typer.echo(f"wrote {key_path} and {pub_path}")


def _admin(server: str, key: Path) -> Any:
    from clients.admin import Admin

    return Admin(server, _identity(key).signing)


def _call(action: Any) -> Any:
    from pydantic import ValidationError

    from he_agg.errors import ServiceError

    try:
        return action()
    except ServiceError as exc:
        _fail(f"the server refused: {exc}")
    except OSError as exc:
        _fail(f"cannot reach the server: {exc}")
    except ValidationError as exc:
        _fail(f"invalid request or response: {exc}")


def _public_file(path: Path) -> dict[str, Any]:
    """A party's .pub.json, as written by ``he-agg keys generate``."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {path}: {exc}")


@federation_app.command("create")
def federation_create(
    federation_id: str = typer.Argument(...),
    clients: list[Path] = typer.Option(..., "--client", help="a client's .pub.json (repeatable)"),
    members: list[Path] = typer.Option([], "--member", help="a member's .pub.json (repeatable)"),
    threshold: int = typer.Option(2, help="t: members needed to decrypt"),
    k_min: int = typer.Option(2, help="fewest clients for a round to be decrypted"),
    plaintext: bool = typer.Option(False, help="a plaintext baseline federation (no HE)"),
    share_timeout: float = typer.Option(60.0, help="seconds before a silent member is replaced"),
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    server: str = SERVER,
) -> None:
    """Create a federation from the parties' public key files."""
    from pydantic import ValidationError

    from he_agg.api.models import FederationCreate, MemberIn, PartyIn
    from he_agg.api.states import FederationMode

    try:
        spec = FederationCreate(
            id=federation_id,
            mode=FederationMode.PLAINTEXT if plaintext else FederationMode.CKKS,
            threshold=threshold,
            k_min=k_min,
            share_timeout_seconds=share_timeout,
            clients=[PartyIn.model_validate(_public_file(p)) for p in clients],
            members=[MemberIn.model_validate(_public_file(p)) for p in members],
        )
    except ValidationError as exc:
        _fail(f"invalid federation: {exc}")
    result = _call(lambda: _admin(server, admin_key).create_federation(spec))
    typer.echo(
        json.dumps({"id": result.id, "keygen_phase": result.keygen_phase, "epoch": result.epoch})
    )


@round_app.command("open")
def round_open(
    federation_id: str = typer.Argument(...),
    deadline: float = typer.Option(600.0, help="seconds until the round closes on its own"),
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    server: str = SERVER,
) -> None:
    """Open the next round; prints its number."""
    result = _call(lambda: _admin(server, admin_key).open_round(federation_id, deadline))
    typer.echo(result.number)


@round_app.command("status")
def round_status(
    federation_id: str = typer.Argument(...),
    number: int = typer.Argument(...),
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    server: str = SERVER,
) -> None:
    result = _call(lambda: _admin(server, admin_key).round(federation_id, number))
    typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))


@round_app.command("close")
def round_close(
    federation_id: str = typer.Argument(...),
    number: int = typer.Argument(...),
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    server: str = SERVER,
) -> None:
    result = _call(lambda: _admin(server, admin_key).close_round(federation_id, number))
    typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))


def _load_update(path: Path) -> dict[str, Any]:
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        _fail(f"{path} does not hold a state_dict")
    return dict(loaded)


@client_app.command("submit")
def client_submit(
    federation_id: str = typer.Argument(...),
    update: Path = typer.Option(..., help="a torch state_dict (.pt) or numpy arrays (.npz)"),
    samples: float = typer.Option(..., help="this client's sample count (its FedAvg weight)"),
    round_number: int = typer.Option(0, "--round", help="round number; 0: the open round"),
    key: Path = typer.Option(..., help="this client's .key file"),
    name: str = typer.Option(..., help="this client's enrolled name"),
    server: str = SERVER,
    wait: bool = typer.Option(False, help="wait for the published model and save it"),
    out: Path = typer.Option(Path("model.pt"), help="where --wait saves the model"),
) -> None:
    """Encrypt an update under the collective key and upload it."""
    from clients.participant import Participant

    if not update.exists():
        _fail(f"{update} does not exist")
    state = _load_update(update)
    participant = Participant(server, federation_id, name, _identity(key).signing)
    if round_number == 0:
        open_rounds = _call(participant.open_rounds)
        if not open_rounds:
            _fail("no round is open")
        round_number = open_rounds[-1]
    receipt = _call(lambda: participant.submit(state, samples, round=round_number))
    typer.echo(json.dumps(receipt.model_dump(mode="json")))
    if wait:
        import torch

        model = _call(lambda: participant.wait_for_model(round_number))
        torch.save(model, out)
        typer.echo(f"saved the round-{round_number} model to {out}")


@committee_app.command("run")
def committee_run(
    federation_id: str = typer.Argument(...),
    key: Path = typer.Option(..., help="this member's .key file"),
    state_dir: Path = typer.Option(..., help="folder for this member's encrypted state"),
    server: str = SERVER,
    poll: float = typer.Option(1.0, help="seconds between polls"),
) -> None:
    """Join the DKG, then verify and decrypt round aggregates until stopped."""
    from he_agg.api.transport import SignedClient
    from he_agg.server.logs import configure_logging
    from keys.agent import MemberAgent

    configure_logging()
    identity = _identity(key)
    if not identity.index:
        _fail("this key has no committee index; generate it with --index")
    agent = MemberAgent(
        SignedClient(server, identity.signing), federation_id, identity, state_dir, _passphrase()
    )
    try:
        agent.run(poll=poll)
    except KeyboardInterrupt:
        typer.echo("stopped")


@app.command()
def pilot(
    out: Path = typer.Option(Path("pilot-report"), help="folder for report.md and plots"),
    rounds: int = typer.Option(8, min=1, max=100, help="federated rounds per model"),
    csv: Path | None = typer.Option(None, help="your own data: a CSV file"),
    target: str | None = typer.Option(None, help="with --csv: the binary target column"),
    bank_column: str | None = typer.Option(None, help="with --csv: the column naming banks"),
    seed: int = typer.Option(0, help="seed for splits, initial models and local shuffles"),
) -> None:
    """The finance pilot: banks train a credit model over he-agg; writes a report."""
    from clients.pilot import PilotConfig, PilotDataError, load_csv, run_pilot

    data: dict[str, Any] = {"kind": "lending_club"}
    if csv is not None:
        if not target or not bank_column:
            _fail("--csv needs --target and --bank-column")
        data = {
            "kind": "csv",
            "path": str(csv.resolve()),
            "target": target,
            "bank_column": bank_column,
        }
        try:
            load_csv(csv, str(target), str(bank_column), seed)  # fail fast, before any process
        except PilotDataError as exc:
            _fail(str(exc))
    try:
        result = run_pilot(PilotConfig(out=out, rounds=rounds, seed=seed, data=data))
    except PilotDataError as exc:
        _fail(str(exc))
    if not all(result.checks.values()):
        raise typer.Exit(1)


@app.command()
def bench(
    quick: bool = typer.Option(False, help="a CI-sized run, under a minute"),
    large: bool = typer.Option(False, help="add 10M parameters to the grid"),
    repeats: int = typer.Option(3, min=1, help="measured repeats after the warm-up"),
    out: Path = typer.Option(Path("benchmarks/results"), help="folder for JSON, tables, plots"),
    end_to_end: bool = typer.Option(
        True, help="also time one round of the article CNN and the pilot, HE against plaintext"
    ),
) -> None:
    """The HE-overhead benchmark: the grid of model sizes × clients, with baselines."""
    from clients.bench import BenchConfig, markdown_tables, run_bench

    if quick:
        config = BenchConfig.quick(out)
    else:
        sizes = (10_000, 100_000, 1_000_000) + ((10_000_000,) if large else ())
        config = BenchConfig(sizes=sizes, repeats=repeats, out=out, slowdowns=end_to_end)
    result = run_bench(config)
    typer.echo(markdown_tables(result))
    typer.echo(f"wrote {out / 'suite.json'}, {out / 'suite.md'} and plots")


@app.command()
def demo(
    clients: int = typer.Option(10, min=1, help="number of clients"),
    members: int = typer.Option(5, min=1, help="committee size n"),
    threshold: int = typer.Option(3, min=1, help="decryption threshold t"),
) -> None:
    """Run one in-process round: committee DKG, encrypted uploads, threshold decryption."""
    from clients.demo import run_demo

    if threshold > members:
        raise typer.BadParameter("threshold must not exceed the committee size")
    result = run_demo(clients=clients, members=members, threshold=threshold)
    if result.max_error > 1e-3 * max(result.value_range, 1e-9):
        typer.echo("error exceeds the expected bound", err=True)
        raise typer.Exit(1)


@app.command()
def params(
    k_max: int = typer.Option(1000, min=1, help="largest number of clients per round"),
    committee_max: int = typer.Option(8, min=1, help="largest committee"),
    tau: int = typer.Option(1024, min=1, help="decryptions per key epoch"),
    value_bits: int = typer.Option(20, help="log2 of the bound V on |Σ n_k x_k|"),
    precision_bits: int = typer.Option(30, help="decoded error at most 2^-p of V"),
) -> None:
    """Derive the smallest parameter set meeting the four rules and print it."""
    from he_agg.errors import ParameterError
    from he_agg.params import derive_parameters

    try:
        chosen = derive_parameters(
            "custom",
            k_max=k_max,
            committee_max=committee_max,
            tau=tau,
            value_bits=value_bits,
            precision_bits=precision_bits,
        )
    except ParameterError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(chosen.describe(), indent=2))


if __name__ == "__main__":
    app()
