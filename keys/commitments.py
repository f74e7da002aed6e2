"""A member's check of the DKG commitments before it reveals its own share.

Commitments are signed by their members (over the federation, the epoch, the pinned
roster's digest and H(p_i)), and a member pins all n of them before revealing p_i. A
server therefore cannot post commitments in a member's name, cannot swap a member's
commitment after seeing the reveals (rogue-key), and cannot show one member a view of
the other reveals that was not committed first. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping

from he_agg.collective_key import commitment_message
from he_agg.errors import ProtocolError, SignatureError
from he_agg.request_signing import verify_signature
from he_agg.roster import Roster

__all__ = ["check_commitments", "split_commitment"]


def split_commitment(value: str) -> tuple[bytes, bytes]:
    """'commitment:signature' (hex, as the server relays it) → the two byte strings."""
    commitment, _, signature = value.partition(":")
    try:
        return bytes.fromhex(commitment), bytes.fromhex(signature)
    except ValueError as exc:
        raise ProtocolError(f"a relayed commitment is not hex: {exc}") from exc


def check_commitments(
    served: Mapping[int, str], roster: Roster, federation: str, epoch: int, own: bytes, member: int
) -> dict[int, bytes]:
    """{index: H(p_i)} when there is exactly one commitment per roster member, each signed by
    that member for this federation, epoch and roster, and this member's own is ``own``."""
    expected = sorted(m.index for m in roster.members)
    if sorted(served) != expected:
        raise ProtocolError(f"commitments from {sorted(served)}; the roster has {expected}")
    pinned = {}
    for entry in roster.members:
        commitment, signature = split_commitment(served[entry.index])
        message = commitment_message(federation, epoch, entry.index, roster.digest, commitment)
        try:
            verify_signature(bytes.fromhex(entry.signing_key), signature, message)
        except SignatureError as exc:
            raise ProtocolError(f"member {entry.index}'s commitment is not signed by it") from exc
        pinned[entry.index] = commitment
    if pinned[member] != own:
        raise ProtocolError("the relayed commitment of this member is not the one it posted")
    return pinned
