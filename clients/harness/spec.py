"""The one builder of a test federation's ``FederationCreate`` body (local runs, benchmarks,
tests): clients by name, committee members named ``member-<index>``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from he_agg.api.models import FederationCreate, MemberIn, PartyIn
from he_agg.api.states import FederationMode
from he_agg.params import ParameterSet
from keys.identity import PublicIdentity

__all__ = ["federation_spec"]


def federation_spec(
    federation: str,
    clients: Mapping[str, PublicIdentity],
    members: Sequence[PublicIdentity] = (),
    *,
    params: ParameterSet | None = None,
    mode: FederationMode = FederationMode.CKKS,
    threshold: int = 2,
    k_min: int = 2,
    max_parameters: int = 10_000_000,
    share_timeout: float = 60.0,
) -> FederationCreate:
    """A plaintext federation has no committee: its threshold is 1 and ``members`` is ignored.
    ``params`` None: the server's default parameter set."""
    ckks = mode == FederationMode.CKKS
    return FederationCreate(
        id=federation,
        parameters=None if params is None else params.to_dict(),
        mode=mode,
        threshold=threshold if ckks else 1,
        k_min=k_min,
        max_parameters=max_parameters,
        share_timeout_seconds=share_timeout,
        clients=[PartyIn(name=n, signing_key=p.signing_key.hex()) for n, p in clients.items()],
        members=[
            MemberIn(
                name=f"member-{m.index}",
                index=m.index,
                signing_key=m.signing_key.hex(),
                encryption_key=m.encryption_key.hex(),
            )
            for m in (members if ckks else ())
        ],
    )
