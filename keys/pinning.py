"""The roster a member pinned, kept in its state folder; changes only to signed successors.

The first roster comes out of band (a file, its fingerprint compared by voice). After
that, a different roster is accepted only if the pinned admin signed it as a successor
(higher version, same federation): a member never follows the server's view.
"""

from __future__ import annotations

import logging
from pathlib import Path

from he_agg.errors import ProtocolError
from he_agg.roster import SignedRoster
from keys.ledger import write_durably

__all__ = ["ROSTER_FILE", "pin_roster"]

ROSTER_FILE = "roster.json"
log = logging.getLogger("he_agg.member")


def pin_roster(state_dir: Path, federation: str, offered: SignedRoster | None) -> SignedRoster:
    """The pinned roster after taking ``offered`` (None: keep what is pinned).

    Raises ProtocolError when nothing is pinned and nothing is offered, when the offered
    roster is for another federation or not signed by its admin, or when it is neither
    the pinned one nor a signed successor of it.
    """
    path = Path(state_dir) / ROSTER_FILE
    pinned = SignedRoster.from_json(path.read_bytes()) if path.exists() else None
    if offered is None:
        if pinned is None:
            raise ProtocolError(
                f"no roster pinned in {state_dir}: pass the admin's roster file (--roster)"
            )
        return pinned
    roster = offered.verify()
    if roster.federation != federation:
        raise ProtocolError(f"the roster is for {roster.federation!r}, not {federation!r}")
    if pinned is not None and pinned.to_json() != offered.to_json():
        offered.check_successor_of(pinned)
        log.warning(
            "roster changed",
            extra={"federation": federation, "version": roster.version, "epoch": roster.epoch},
        )
    if pinned is None or pinned.to_json() != offered.to_json():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, offered.to_json().encode())
        path.chmod(0o600)
    return offered
