"""The ``he-agg`` command line: serve, keys, federation, round, client, committee, pilot,
bench, demo, params. It sits on top of every layer (server, committee, SDK and apps), so
it lives here rather than in the core; imports are lazy to keep ``--help`` fast. The
commands live in ``cli_federation`` (admin), ``cli_parties`` (clients and members) and
here (the server and the apps)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from clients.cli_common import (
    fail,
    passphrase,
    public_file,
)
from clients.cli_federation import federation_app, round_app
from clients.cli_parties import client_app, committee_app

__all__ = ["app"]

app = typer.Typer(
    help="he-agg: privacy-preserving aggregation for federated learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # main() turns an unexpected error into one line
)
keys_app = typer.Typer(help="Party keys (Ed25519 to sign, X25519 to receive shares).")
app.add_typer(keys_app, name="keys")
app.add_typer(federation_app, name="federation")
app.add_typer(round_app, name="round")
app.add_typer(client_app, name="client")
app.add_typer(committee_app, name="committee")


@app.command()
def serve(
    host: str | None = typer.Option(None, help="bind address (default 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (default 8750)"),
    data_dir: Path | None = typer.Option(None, help="SQLite and blob folder (./he-agg-data)"),
    database: str | None = typer.Option(
        None, help="database URL: sqlite:///PATH (default: in --data-dir) or postgresql://…"
    ),
    admin: list[Path] = typer.Option([], "--admin", help="an admin's .pub.json (repeatable)"),
    tls_cert: Path | None = typer.Option(None, help="serve https: certificate chain (PEM)"),
    tls_key: Path | None = typer.Option(None, help="with --tls-cert: its private key (PEM)"),
    insecure_http: bool = typer.Option(
        False,
        "--insecure-http",
        help="allow plain http on a non-loopback address (e.g. behind a TLS proxy)",
    ),
) -> None:
    """Run the aggregator under uvicorn. Settings also come from HE_AGG_* or HE_AGG_CONFIG."""
    import uvicorn

    from he_agg.server import create_app

    given = {"host": host, "port": port, "data_dir": data_dir, "database": database}
    given |= {"tls_cert": tls_cert, "tls_key": tls_key, "insecure_http": insecure_http}
    settings = _settings({name: value for name, value in given.items() if value})
    if admin:
        keys = [_signing_key(public_file(p), p) for p in admin]
        settings.admin_keys = [*settings.admin_keys, *keys]
    if not settings.admin_keys:
        fail("no admin key: pass --admin admin.pub.json or set HE_AGG_ADMIN_KEYS")
    from he_agg.errors import HeAggError

    try:
        application = create_app(settings)  # opens the store: migrates, or refuses a newer one
    except HeAggError as exc:
        fail(str(exc))
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    _uvicorn_server()(config, settings.url).run()


def _signing_key(record: dict[str, Any], path: Path) -> str:
    key = record.get("signing_key")
    if not isinstance(key, str):
        fail(f"{path} has no signing_key: pass the admin's .pub.json")
    return key


def _uvicorn_server() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, saying where it listens once the socket is bound (a port in
        use is uvicorn's one error line instead)."""

        def __init__(self, config: uvicorn.Config, url: str) -> None:
            super().__init__(config)
            self.url = url

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                typer.echo(f"he-agg serving on {self.url}", err=True)

    return Server


def _settings(overrides: dict[str, Any]) -> Any:
    """The server's settings, checked: a TLS pair that loads, and no plain http beyond
    loopback unless asked for."""
    import ipaddress

    from pydantic import ValidationError

    from he_agg.server import Settings

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        fail(f"invalid settings: {problems}")
    if settings.tls_cert is not None and settings.tls_key is not None:
        _check_tls_pair(settings.tls_cert, settings.tls_key)
        return settings
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:  # a host name
        loopback = False
    if not loopback and not settings.insecure_http:
        fail(
            f"refusing plain http on {settings.host}: give --tls-cert and --tls-key, or "
            "--insecure-http if a TLS proxy in front of the server terminates https"
        )
    return settings


def _check_tls_pair(cert: Path, key: Path) -> None:
    """Load the certificate and key once here, so that a bad pair is one line, not a trace."""
    import ssl

    for label, path in (("certificate", cert), ("key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            fail(f"cannot read the TLS {label} {path}: {exc.strerror or exc}")
    try:  # an empty password: an encrypted key fails here rather than prompting
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        fail(
            f"the TLS certificate {cert} and key {key} do not load as a pair (the key must be "
            f"unencrypted PEM and match the certificate): {exc}"
        )


@keys_app.command("generate")
def keys_generate(
    name: str = typer.Argument(..., help="party name, e.g. bank-1 or member-2"),
    out: Path = typer.Option(Path("."), help="folder for NAME.key and NAME.pub.json"),
    index: int = typer.Option(
        0, min=0, max=255, help="committee index (1..255) for members; 0 otherwise"
    ),
) -> None:
    """Generate a party's keys: NAME.key (encrypted, 0600) and NAME.pub.json (public)."""
    from keys.identity import Identity, save_identity

    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / f"{name}.key", out / f"{name}.pub.json"
    if key_path.exists():
        fail(f"{key_path} exists; refusing to overwrite a key")
    identity = Identity.generate(index)
    save_identity(key_path, identity, passphrase(confirm=True))
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


@app.command()
def pilot(
    out: Path = typer.Option(Path("pilot-report"), help="folder for report.md and plots"),
    rounds: int = typer.Option(8, min=1, max=100, help="federated rounds per model"),
    csv: Path | None = typer.Option(None, help="your own data: a CSV file"),
    target: str | None = typer.Option(None, help="with --csv: the binary target column"),
    bank_column: str | None = typer.Option(None, help="with --csv: the column naming banks"),
    positive: str | None = typer.Option(
        None, help="with --csv: the target value to predict (needed unless 0/1 or boolean)"
    ),
    impute: str | None = typer.Option(
        None, help="with --csv: 'median' fills numeric gaps with each bank's own medians"
    ),
    min_bank_rows: int = typer.Option(
        10, min=1, help="with --csv: refuse banks with fewer training rows than this"
    ),
    seed: int = typer.Option(0, help="seed for splits, initial models and local shuffles"),
    tls: bool = typer.Option(True, help="https between the parties, with a throwaway CA"),
) -> None:
    """The finance pilot: banks train a credit model over he-agg; writes a report."""
    from clients.harness.signals import exit_on_sigterm
    from clients.pilot import CsvSpec, PilotConfig, PilotDataError, load_csv, run_pilot

    exit_on_sigterm()  # the servers and members it starts stop with it

    data: dict[str, Any] = {"kind": "lending_club"}
    csv_only = {"--target": target, "--bank-column": bank_column, "--positive": positive}
    csv_only["--impute"] = impute
    if csv is None:
        given = [name for name, value in csv_only.items() if value is not None]
        if given:
            fail(f"{', '.join(given)} only apply to --csv (the built-in pilot is LendingClub)")
    else:
        if not target or not bank_column:
            fail("--csv needs --target and --bank-column")
        spec = CsvSpec(csv.resolve(), target, bank_column, positive, impute, min_bank_rows)
        data = {"kind": "csv", **{k: v for k, v in vars(spec).items()}, "path": str(spec.path)}
        try:
            loaded = load_csv(spec, seed)  # fail fast, before any process starts
        except PilotDataError as exc:
            fail(str(exc))
        for warning in loaded.warnings:
            typer.echo(f"warning: {warning}", err=True)
    try:
        result = run_pilot(PilotConfig(out=out, rounds=rounds, seed=seed, data=data), tls=tls)
    except PilotDataError as exc:
        fail(str(exc))
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
    from clients.harness.signals import exit_on_sigterm

    exit_on_sigterm()

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
    from clients.harness.signals import exit_on_sigterm

    exit_on_sigterm()

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
    value_bits: int = typer.Option(40, help="log2 of the bound V on |Σ n_k x_k|"),
    precision_bits: int = typer.Option(30, help="decoded error at most 2^-p of V"),
    proofs: bool = typer.Option(
        True,
        "--proofs/--no-proofs",
        help="uploads carry proofs of well-formed ciphertexts (off: benchmarks and trusted "
        "clients only)",
    ),
    explain: bool = typer.Option(
        False, "--explain", help="print the derivation term by term, then the margins"
    ),
    out: Path | None = typer.Option(
        None, help="also write the set as JSON for `federation create --parameters FILE`"
    ),
) -> None:
    """Derive the smallest parameter set meeting the four rules and print it."""
    from he_agg.errors import ParameterError
    from he_agg.params import derive_parameters, render_explanation

    try:
        chosen = derive_parameters(
            "custom",
            k_max=k_max,
            committee_max=committee_max,
            tau=tau,
            value_bits=value_bits,
            precision_bits=precision_bits,
            proofs=proofs,
        )
    except ParameterError as exc:
        fail(str(exc))
    typer.echo(render_explanation(chosen) if explain else json.dumps(chosen.describe(), indent=2))
    if out is not None:
        out.write_text(json.dumps(chosen.to_dict(), indent=2) + "\n")
        typer.echo(f"wrote {out}", err=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"he-agg {version('he-agg')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("he-agg (not installed: run from a source tree)")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="show the traceback of an unexpected error"),
    show_version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="print the version"
    ),
) -> None:
    """he-agg: privacy-preserving aggregation for federated learning."""
    del debug, show_version  # --debug is read by main() from argv; --version exits early


def main(argv: list[str] | None = None) -> None:
    """The console script: an error that no command turned into a message is still one line
    on stderr (and exit status 1), never a traceback, unless ``--debug`` is given."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="he-agg")
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        raise SystemExit(130) from None
    except Exception as exc:
        if "--debug" in args:
            raise
        typer.secho(
            f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            fg=typer.colors.RED,
            err=True,
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
