"""``he-agg federation …`` and ``he-agg round …``: the admin's commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from clients.cli_common import (
    CA_FILE,
    FEDERATION_ID,
    SERVER,
    admin_client,
    call,
    fail,
    parameter_set,
    public_file,
    read_roster,
)
from he_agg.api.states import FederationMode
from he_agg.roster import SignedRoster

__all__ = ["federation_app", "round_app"]

federation_app = typer.Typer(help="Administer federations and their signed rosters.")
round_app = typer.Typer(help="Open, inspect and close rounds.")


def _write_roster(signed: SignedRoster, target: Path | None) -> None:
    """Write the signed roster (default ./FEDERATION.roster.json) and say its fingerprint."""
    path = target or Path(f"{signed.roster.federation}.roster.json")
    path.write_text(signed.to_json())
    typer.echo(f"wrote {path}; fingerprint {signed.roster.fingerprint}")


@federation_app.command("create")
def federation_create(
    federation_id: str = FEDERATION_ID,
    clients: list[Path] = typer.Option(..., "--client", help="a client's .pub.json (repeatable)"),
    members: list[Path] = typer.Option([], "--member", help="a member's .pub.json (repeatable)"),
    threshold: int = typer.Option(2, help="t: members needed to decrypt"),
    k_min: int = typer.Option(2, help="fewest clients for a round to be decrypted"),
    plaintext: bool = typer.Option(False, help="a plaintext baseline federation (no HE)"),
    share_timeout: float = typer.Option(60.0, help="seconds before a silent member is replaced"),
    parameters: str = typer.Option(
        "default",
        help="the CKKS parameter set: 'default', 'no-proofs' (benchmarks and trusted clients "
        "only), or a JSON file written by `he-agg params --out FILE`",
    ),
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    roster_out: Path | None = typer.Option(
        None, help="where to write the signed roster (default: ./FEDERATION.roster.json)"
    ),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
) -> None:
    """Create a federation from the parties' public key files; write its signed roster.

    Give the roster file to every party and read its fingerprint to them: each pins it
    (``he-agg federation pin``) and trusts nothing the server says that differs from it."""
    from pydantic import ValidationError

    from he_agg.api.models import FederationCreate, MemberIn, PartyIn

    chosen = parameter_set(parameters)
    try:
        spec = FederationCreate(
            id=federation_id,
            parameters=chosen.to_dict(),
            mode=FederationMode.PLAINTEXT if plaintext else FederationMode.CKKS,
            threshold=threshold,
            k_min=k_min,
            share_timeout_seconds=share_timeout,
            clients=[PartyIn.model_validate(public_file(p)) for p in clients],
            members=[MemberIn.model_validate(public_file(p)) for p in members],
        )
    except ValidationError as exc:
        fail(f"invalid federation: {exc}")
    admin = admin_client(server, admin_key, ca_file)
    if spec.mode == FederationMode.CKKS:
        signed = admin.signed_roster(spec)
        spec = spec.model_copy(update={"roster": signed.to_json()})
    result = call(lambda: admin.create_federation(spec))
    typer.echo(
        json.dumps({"id": result.id, "keygen_phase": result.keygen_phase, "epoch": result.epoch})
    )
    if spec.mode == FederationMode.CKKS:
        _write_roster(signed, roster_out)


@federation_app.command("export")
def federation_export(
    federation_id: str = FEDERATION_ID,
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    out: Path | None = typer.Option(None, help="default: ./FEDERATION.roster.json"),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
) -> None:
    """Fetch the federation's roster again; it must carry this admin's own signature."""
    admin = admin_client(server, admin_key, ca_file)
    signed = call(lambda: admin.roster(federation_id))
    if signed.roster.admin_key != admin.http.public_key.hex():
        fail("the served roster is not signed by this admin key; do not hand it out")
    _write_roster(signed, out)


@federation_app.command("epochs")
def federation_epochs(
    federation_id: str = FEDERATION_ID,
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
) -> None:
    """List the key epochs: phase, budget used, current, retired."""
    listed = call(lambda: admin_client(server, admin_key, ca_file).epochs(federation_id))
    typer.echo(json.dumps([e.model_dump(mode="json") for e in listed], indent=2))


@federation_app.command("rekey")
def federation_rekey(
    federation_id: str = FEDERATION_ID,
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
) -> None:
    """Start the next key epoch under the same roster (the committee runs its DKG in the
    background; rounds opened once its key is ready use it)."""
    listed = call(lambda: admin_client(server, admin_key, ca_file).rekey(federation_id))
    typer.echo(f"key epoch {listed[-1].epoch} started ({listed[-1].phase})")


@federation_app.command("change")
def federation_change(
    federation_id: str = FEDERATION_ID,
    add_member: list[Path] = typer.Option([], help="a new member's .pub.json (repeatable)"),
    remove_member: list[str] = typer.Option([], help="a member's name (repeatable)"),
    add_client: list[Path] = typer.Option([], help="a new client's .pub.json (repeatable)"),
    remove_client: list[str] = typer.Option([], help="a client's name (repeatable)"),
    threshold: int | None = typer.Option(None, help="a new t"),
    k_min: int | None = typer.Option(None, help="a new K_min"),
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    roster_out: Path | None = typer.Option(
        None, help="where to write the new signed roster (default: ./FEDERATION.roster.json)"
    ),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
) -> None:
    """Change the committee, the clients, t or K_min: a new signed roster and a new key
    epoch. Give the new roster file to new parties (they pin it); enrolled parties follow
    it on their own, checking this admin's signature."""
    from pydantic import ValidationError

    from he_agg.api.models import MemberIn, PartyIn
    from he_agg.roster import RosterClient, RosterMember

    try:
        members = [MemberIn.model_validate(public_file(p)) for p in add_member]
        clients = [PartyIn.model_validate(public_file(p)) for p in add_client]
    except ValidationError as exc:
        fail(f"invalid party file: {exc}")
    admin = admin_client(server, admin_key, ca_file)
    signed = call(
        lambda: admin.change_roster(
            federation_id,
            add_members=[
                RosterMember(m.name, m.index, m.signing_key, m.encryption_key) for m in members
            ],
            remove_members=remove_member,
            add_clients=[RosterClient(c.name, c.signing_key) for c in clients],
            remove_clients=remove_client,
            threshold=threshold,
            k_min=k_min,
        )
    )
    roster = signed.roster
    typer.echo(f"roster version {roster.version} starts key epoch {roster.epoch}")
    _write_roster(signed, roster_out)


@federation_app.command("fingerprint")
def federation_fingerprint(
    roster: Path = typer.Argument(..., help="a signed roster file"),
) -> None:
    """Print a roster's fingerprint and what it enrols, to compare by voice."""
    signed = read_roster(roster).roster
    typer.echo(f"federation {signed.federation}, version {signed.version}, epoch {signed.epoch}")
    typer.echo(
        f"{len(signed.clients)} clients; {len(signed.members)} members, t = {signed.threshold}"
    )
    if signed.proofs is not None:
        shown = "required" if signed.proofs else "OFF (trusted clients only)"
        typer.echo(f"proofs of well-formed uploads: {shown}")
    typer.echo(f"fingerprint {signed.fingerprint}")


@federation_app.command("pin")
def federation_pin(
    roster: Path = typer.Argument(..., help="the roster file the admin gave you"),
    fingerprint: str = typer.Option(..., help="the fingerprint the admin read to you"),
    into: Path = typer.Option(Path("."), help="folder to keep the pinned roster in"),
) -> None:
    """Check the roster's fingerprint against the one you were told, then keep it."""
    signed = read_roster(roster)

    def normal(text: str) -> str:
        return text.replace("-", "").replace(" ", "").upper()

    if normal(fingerprint) != normal(signed.roster.fingerprint):
        fail("the fingerprint does not match this roster: do not use it")
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{signed.roster.federation}.roster.json"
    target.write_text(signed.to_json())
    typer.echo(f"pinned {target}")


@round_app.command("open")
def round_open(
    federation_id: str = FEDERATION_ID,
    deadline: float = typer.Option(600.0, help="seconds until the round closes on its own"),
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
) -> None:
    """Open the next round; prints its number."""
    result = call(
        lambda: admin_client(server, admin_key, ca_file).open_round(federation_id, deadline)
    )
    typer.echo(result.number)


@round_app.command("status")
def round_status(
    federation_id: str = FEDERATION_ID,
    number: int = typer.Argument(..., help="the round number"),
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
) -> None:
    """Print a round's state, uploads, decryption attempt and set, as JSON."""
    result = call(lambda: admin_client(server, admin_key, ca_file).round(federation_id, number))
    typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))


@round_app.command("close")
def round_close(
    federation_id: str = FEDERATION_ID,
    number: int = typer.Argument(..., help="the round number"),
    admin_key: Path = typer.Option(..., help="the admin's .key file"),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
) -> None:
    """Close an open round now: below K_min it is aborted, else decryption starts."""
    result = call(
        lambda: admin_client(server, admin_key, ca_file).close_round(federation_id, number)
    )
    typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
