"""``he-agg client …`` and ``he-agg committee …``: what clients and members run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from clients.cli_common import (
    CA_FILE,
    FEDERATION_ID,
    SERVER,
    call,
    fail,
    party_key,
    passphrase,
    read_roster,
)

__all__ = ["client_app", "committee_app"]

client_app = typer.Typer(help="A client's commands.")
committee_app = typer.Typer(help="A committee member's commands.")


def _load_update(path: Path) -> dict[str, Any]:
    """A torch state_dict (.pt) or numpy arrays (.npz); anything else is one clear line."""
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        import torch

        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fail(f"{path} is not a torch state_dict (.pt) or numpy arrays (.npz): {reason}")
    if not isinstance(loaded, dict):
        fail(f"{path} does not hold a state_dict")
    return dict(loaded)


def _save_model(model: dict[str, Any], out: Path) -> None:
    """A state_dict of tensors, which ``torch.load(out, weights_only=True)`` reads."""
    import numpy as np
    import torch

    torch.save({name: torch.as_tensor(np.asarray(value)) for name, value in model.items()}, out)


@client_app.command("submit")
def client_submit(
    federation_id: str = FEDERATION_ID,
    update: Path = typer.Option(..., help="a torch state_dict (.pt) or numpy arrays (.npz)"),
    samples: float = typer.Option(..., help="this client's sample count (its FedAvg weight)"),
    round_number: int = typer.Option(0, "--round", help="round number; 0: the open round"),
    key: Path = typer.Option(..., help="this client's .key file"),
    name: str = typer.Option(..., help="this client's enrolled name"),
    roster: Path | None = typer.Option(
        None, help="the pinned roster (he-agg federation pin); needed to encrypt"
    ),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
    wait: bool = typer.Option(False, help="wait for the published model and save it"),
    out: Path = typer.Option(Path("model.pt"), help="where --wait saves the model"),
) -> None:
    """Encrypt an update under the collective key and upload it."""
    from clients.participant import Participant

    if not update.exists():
        fail(f"{update} does not exist")
    state = _load_update(update)
    signing = party_key(key).signing
    pinned = None if roster is None else read_roster(roster)
    participant = call(
        lambda: Participant(
            server,
            federation_id,
            name,
            signing,
            verify=ca_file or True,
            roster=pinned,
            roster_file=roster,  # rewritten with the newest signed successor followed
        )
    )
    if round_number == 0:
        open_rounds = call(participant.open_rounds)
        if not open_rounds:
            fail("no round is open")
        round_number = open_rounds[-1]
    receipt = call(lambda: participant.submit(state, samples, round=round_number))
    typer.echo(json.dumps(receipt.model_dump(mode="json")))
    if wait:
        model = call(lambda: participant.wait_for_model(round_number))
        _save_model(model, out)
        typer.echo(f"saved the round-{round_number} model to {out}")


@client_app.command("example-update")
def client_example_update(
    out: Path = typer.Argument(..., help="the .pt file to write (e.g. bank1.pt)"),
    model: str = typer.Option(
        "logistic", help="logistic | mlp (24 inputs by default) | cnn (the article's CNN)"
    ),
    features: int = typer.Option(24, min=1, help="inputs of the logistic and mlp models"),
    seed: int = typer.Option(0, help="seed: banks with different seeds get different updates"),
) -> None:
    """Write a model's state_dict to try `client submit` with (a real client writes its
    locally trained model: torch.save(model.state_dict(), "bank1.pt"))."""
    import torch

    from clients.simulation.datasets import ArticleCNN
    from clients.simulation.training import logistic_regression, mlp

    builders = {
        "logistic": lambda: logistic_regression(features),
        "mlp": lambda: mlp(features),
        "cnn": ArticleCNN,
    }
    if model not in builders:
        fail(f"--model {model!r}: choose one of {', '.join(builders)}")
    torch.manual_seed(seed)
    state = builders[model]().state_dict()
    torch.save(state, out)
    count = sum(int(t.numel()) for t in state.values())
    typer.echo(f"wrote {out}: a {model} state_dict of {count} parameters")


@client_app.command("fetch")
def client_fetch(
    federation_id: str = FEDERATION_ID,
    round_number: int = typer.Option(
        0, "--round", help="round number; 0: the newest round with a published model"
    ),
    key: Path = typer.Option(..., help="your .key file (any enrolled client or member)"),
    name: str = typer.Option("", help="your enrolled name (optional: the key identifies you)"),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
    wait: bool = typer.Option(False, help="wait until the round's model is published"),
    timeout: float = typer.Option(600.0, min=1, help="with --wait: give up after this many s"),
    out: Path = typer.Option(Path("model.pt"), help="where to save the model (torch)"),
) -> None:
    """Download a round's published (averaged) model, signed with your key."""

    from clients.participant import Participant

    signing = party_key(key).signing
    participant = call(
        lambda: Participant(server, federation_id, name or "fetch", signing, verify=ca_file or True)
    )
    if round_number == 0:
        published = call(participant.published_rounds)
        if not published:
            fail(f"federation {federation_id!r} has no published model yet")
        round_number = published[-1]
    if wait:
        model = call(lambda: participant.wait_for_model(round_number, timeout=timeout))
    else:
        model = call(lambda: participant.fetch_model(round_number))
    _save_model(model, out)
    typer.echo(f"saved the round-{round_number} model to {out}")


@committee_app.command("run")
def committee_run(
    federation_id: str = FEDERATION_ID,
    key: Path = typer.Option(..., help="this member's .key file"),
    state_dir: Path = typer.Option(..., help="folder for this member's encrypted state"),
    server: str = SERVER,
    ca_file: Path | None = CA_FILE,
    poll: float = typer.Option(1.0, help="seconds between polls"),
    roster: Path | None = typer.Option(
        None, help="the admin's roster file (first run); later it is pinned in --state-dir"
    ),
) -> None:
    """Join the DKG, then verify and decrypt round aggregates until stopped."""
    from he_agg.api.transport import SignedClient
    from he_agg.challenge_compiled import one_blas_thread
    from he_agg.memory import tune_allocator
    from he_agg.server.logs import configure_logging
    from keys.agent import MemberAgent

    configure_logging()
    identity = party_key(key)
    if not identity.index:
        fail("this key has no committee index; generate it with --index")
    client = call(lambda: SignedClient(server, identity.signing, verify=ca_file or True))
    _refuse_untrusted(client)
    offered = None if roster is None else read_roster(roster)
    agent = call(
        lambda: MemberAgent(client, federation_id, identity, state_dir, passphrase(), offered)
    )
    tune_allocator()  # each round's fetched uploads go back to the system (he_agg.memory)
    one_blas_thread()  # it verifies on threads of its own (he_agg.challenge_compiled)
    try:
        agent.run(poll=poll)
    except KeyboardInterrupt:
        typer.echo("stopped")


def _refuse_untrusted(client: Any) -> None:
    """Stop at once on a certificate the CA file does not vouch for (or a failed TLS
    handshake); an unreachable server is left to the agent, which retries until it answers."""
    from he_agg.errors import HeAggError, TransportError

    retries, client.retries = client.retries, 0
    try:
        client.request("GET", "/health")
    except TransportError as exc:
        if exc.tls:
            fail(str(exc))
    except HeAggError:
        pass
    finally:
        client.retries = retries
