"""Does a federation's configuration say what its signed roster says?

The server checks this when a federation is created; members and clients check it on
every configuration the server serves, against the roster they pinned themselves.
"""

from __future__ import annotations

from he_agg.api.models import FederationCreate
from he_agg.params import DEFAULT, ParameterSet
from he_agg.roster import Roster, RosterClient, RosterMember

__all__ = ["config_parameters", "roster_for", "roster_mismatch"]


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
    )


def roster_mismatch(config: FederationCreate, roster: Roster) -> str | None:
    """What differs between the served configuration and the roster, or None."""
    expected = roster_for(config, roster.admin_key, version=roster.version, epoch=roster.epoch)
    for field in ("federation", "mode", "parameters", "threshold", "k_min", "k_max"):
        if getattr(expected, field) != getattr(roster, field):
            return f"{field} differs from the pinned roster"
    if sorted(expected.clients, key=str) != sorted(roster.clients, key=str):
        return "the enrolled clients differ from the pinned roster"
    if expected.members != roster.members:
        return "the committee differs from the pinned roster"
    return None
