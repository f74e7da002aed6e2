"""The states a round and a key generation go through, as enums every party shares."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FederationMode", "KeygenPhase", "PartyRole", "RoundState"]


class RoundState(StrEnum):
    """open → closed → decrypting → published, or aborted (below K_min, τ spent, …)."""

    OPEN = "open"
    DECRYPTING = "decrypting"
    PUBLISHED = "published"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        return self in (RoundState.PUBLISHED, RoundState.ABORTED)


class KeygenPhase(StrEnum):
    """commit (H(p_i)) → reveal (p_i) → deal (encrypted Shamir shares) → ready."""

    COMMIT = "commit"
    REVEAL = "reveal"
    DEAL = "deal"
    READY = "ready"


class FederationMode(StrEnum):
    CKKS = "ckks"
    PLAINTEXT = "plaintext"  # benchmarks' baseline: the same service, no encryption


class PartyRole(StrEnum):
    CLIENT = "client"
    MEMBER = "member"
