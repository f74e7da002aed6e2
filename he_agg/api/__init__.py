"""The wire contract shared by the server, the participant SDK and the member agent:
request/response models, state enums, route paths and the signed HTTP client."""

from he_agg.api import paths
from he_agg.api.states import FederationMode, KeygenPhase, PartyRole, RoundState

__all__ = ["FederationMode", "KeygenPhase", "PartyRole", "RoundState", "paths"]
