"""One function per route path. Server routes, the SDK and the member agent all build
their URLs here, so a signed target (which members re-check byte for byte) has one source.
"""

from __future__ import annotations

__all__ = [
    "PREFIX",
    "aggregate",
    "close_round",
    "commitment",
    "decryption",
    "decryption_share",
    "endorsement",
    "epochs",
    "federation",
    "federations",
    "key_statement",
    "key_statements",
    "keygen",
    "model",
    "public_key",
    "public_key_share",
    "roster",
    "rosters",
    "round",
    "rounds",
    "shamir_share",
    "update",
    "updates",
    "watch",
]

PREFIX = "/v1/federations"


def federations() -> str:
    return PREFIX


def federation(federation_id: str) -> str:
    return f"{PREFIX}/{federation_id}"


def _at(base: str, epoch: int | None) -> str:
    return base if epoch is None else f"{base}?epoch={epoch}"


def public_key(federation_id: str, epoch: int | None = None) -> str:
    """The collective key of ``epoch`` (omitted: the current epoch)."""
    return _at(f"{federation(federation_id)}/public-key", epoch)


def roster(federation_id: str) -> str:
    """The federation's first roster (the one it was created with)."""
    return f"{federation(federation_id)}/roster"


def rosters(federation_id: str) -> str:
    """Every roster the federation has had, oldest first: the chain parties follow."""
    return f"{federation(federation_id)}/rosters"


def epochs(federation_id: str) -> str:
    """The key epochs (GET); the admin's request for the next one (POST)."""
    return f"{federation(federation_id)}/epochs"


def key_statements(federation_id: str, epoch: int | None = None) -> str:
    return _at(f"{federation(federation_id)}/key-statements", epoch)


def key_statement(federation_id: str, member: int) -> str:
    return f"{keygen(federation_id)}/statements/{member}"


def keygen(federation_id: str, epoch: int | None = None) -> str:
    """The DKG status of ``epoch`` (omitted: the newest); the prefix of the DKG routes."""
    return _at(f"{federation(federation_id)}/keygen", epoch)


def commitment(federation_id: str, member: int) -> str:
    return f"{keygen(federation_id)}/commitments/{member}"


def public_key_share(federation_id: str, member: int, epoch: int | None = None) -> str:
    return _at(f"{keygen(federation_id)}/public-key-shares/{member}", epoch)


def shamir_share(federation_id: str, sender: int, recipient: int, epoch: int | None = None) -> str:
    return _at(f"{keygen(federation_id)}/shamir-shares/{sender}/{recipient}", epoch)


def rounds(federation_id: str, state: str | None = None) -> str:
    base = f"{federation(federation_id)}/rounds"
    return base if state is None else f"{base}?round_state={state}"


def round(federation_id: str, number: int) -> str:
    return f"{rounds(federation_id)}/{number}"


def close_round(federation_id: str, number: int) -> str:
    return f"{round(federation_id, number)}/close"


def updates(federation_id: str, number: int) -> str:
    """The round's stored uploads so far (members)."""
    return f"{round(federation_id, number)}/updates"


def update(federation_id: str, number: int, client: str) -> str:
    """The signed upload target; members re-verify each upload's signature over it."""
    return f"{round(federation_id, number)}/updates/{client}"


def aggregate(federation_id: str, number: int) -> str:
    return f"{round(federation_id, number)}/aggregate"


def decryption(federation_id: str, number: int) -> str:
    return f"{round(federation_id, number)}/decryption"


def decryption_share(federation_id: str, number: int, attempt: int, member: int) -> str:
    return f"{decryption(federation_id, number)}/{attempt}/shares/{member}"


def endorsement(federation_id: str, number: int, member: int) -> str:
    """Where a member PUTs its endorsement of the round's upload set."""
    return f"{round(federation_id, number)}/endorsements/{member}"


def model(federation_id: str, number: int) -> str:
    return f"{round(federation_id, number)}/model"


def watch(federation_id: str, since: str | None = None, wait: float = 0.0) -> str:
    """The long poll: answered when the federation's activity tag differs from ``since``."""
    query = f"wait={wait:g}" + ("" if since is None else f"&since={since}")
    return f"{federation(federation_id)}/watch?{query}"
