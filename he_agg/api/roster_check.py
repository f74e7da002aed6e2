"""Does a federation's configuration say what its signed roster says?

The server checks this when a federation is created; members and clients check it on
every configuration the server serves, against the roster they pinned themselves.
"""

from __future__ import annotations

from he_agg.api.models import FederationCreate
from he_agg.errors import HeAggError
from he_agg.params import DEFAULT, ParameterSet
from he_agg.roster import Roster, RosterClient, RosterMember, SignedRoster

__all__ = ["config_parameters", "genesis_mismatch", "roster_for", "roster_mismatch"]


def config_parameters(config: FederationCreate) -> ParameterSet:
    return DEFAULT if config.parameters is None else ParameterSet.from_dict(config.parameters)


def roster_for(
    config: FederationCreate, admin_key: str, *, version: int = 1, epoch: int = 0
) -> Roster:
    """The roster that describes ``config`` (what an admin signs when it creates one)."""
    params = config_parameters(config)
    return Roster(
        federation=config.id,
        version=version,
        epoch=epoch,
        parameters=params.fingerprint.hex(),
        mode=config.mode.value,
        threshold=config.threshold,
        k_min=config.k_min,
        k_max=params.k_max,
        clients=tuple(RosterClient(c.name, c.signing_key) for c in config.clients),
        members=tuple(
            RosterMember(m.name, m.index, m.signing_key, m.encryption_key)
            for m in sorted(config.members, key=lambda m: m.index)
        ),
        admin_key=admin_key,
        proofs=params.proofs,
    )


def roster_mismatch(config: FederationCreate, roster: Roster) -> str | None:
    """What differs between the served configuration and the roster, or None."""
    expected = roster_for(config, roster.admin_key, version=roster.version, epoch=roster.epoch)
    for field in ("federation", "mode", "parameters", "threshold", "k_min", "k_max"):
        if getattr(expected, field) != getattr(roster, field):
            return f"{field} differs from the pinned roster"
    if roster.proofs is not None and roster.proofs != expected.proofs:
        return "the proofs setting differs from the pinned roster"
    if sorted(expected.clients, key=str) != sorted(roster.clients, key=str):
        return "the enrolled clients differ from the pinned roster"
    if expected.members != roster.members:
        return "the committee differs from the pinned roster"
    return None


def genesis_mismatch(served: FederationCreate, pinned: SignedRoster) -> str | None:
    """What is wrong with a served configuration for a party that pinned ``pinned`` (the
    creation roster, or a later one it followed), or None.

    The configuration carries the roster the federation was created with; it must be
    signed by the pinned roster's admin for the same federation, parameter set and mode,
    be the pinned roster itself if it has the same version, and say what it says."""
    mine = pinned.roster
    if served.roster is None:
        return "it has no roster"
    try:
        genesis = SignedRoster.from_json(served.roster)
        first = genesis.verify()
    except HeAggError as exc:
        return f"its roster: {exc}"
    if (first.admin_key, first.federation) != (mine.admin_key, mine.federation):
        return "its roster is not the pinned admin's roster of this federation"
    if (first.parameters, first.mode) != (mine.parameters, mine.mode):
        return "its parameter set or mode differs from the pinned roster"
    if first.version > mine.version or (
        first.version == mine.version and genesis.to_json() != pinned.to_json()
    ):
        return "its roster is not the pinned one nor an earlier one"
    return roster_mismatch(served, first)
