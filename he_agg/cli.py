"""The ``he-agg`` command line."""

from __future__ import annotations

import json

import typer

app = typer.Typer(
    help="he-agg: privacy-preserving aggregation for federated learning.", no_args_is_help=True
)


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
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(chosen.describe(), indent=2))


if __name__ == "__main__":
    app()
