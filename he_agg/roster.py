"""The roster: who is in a federation, signed by its admin, pinned by every party.

A roster names the parameter set (by fingerprint), the clients' and members' keys, t,
K_min, K_max, the first key epoch it governs and a version that only grows. Key epochs
that re-key under an unchanged roster (τ running low, an admin's request) keep it; every
roster change starts a new epoch (:func:`follow`, :func:`roster_for_epoch`). The admin
signs it; every party gets the file out of band and compares its short fingerprint by voice (as with
SSH host keys) before pinning it. From then on a party trusts only what the pinned
roster, or a successor signed by the same admin, says: never the server's view.

Canonical bytes are JSON with sorted keys and no spaces, so any reader can recompute
the digest; the signature covers ``b"he-agg/roster/v1\\x00" ‖ canonical``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from he_agg.errors import ProtocolError, SignatureError
from he_agg.request_signing import verify_signature

__all__ = [
    "Roster",
    "RosterClient",
    "RosterMember",
    "SignedRoster",
    "follow",
    "roster_for_epoch",
]

_DOMAIN = b"he-agg/roster/v1\x00"


@dataclass(frozen=True)
class RosterClient:
    name: str
    signing_key: str  # Ed25519, hex


@dataclass(frozen=True)
class RosterMember:
    name: str
    index: int
    signing_key: str  # Ed25519, hex
    encryption_key: str  # X25519, hex


@dataclass(frozen=True)
class Roster:
    federation: str
    version: int  # grows with every change; a party accepts only a higher one
    epoch: int  # the first key epoch this roster governs (re-keys keep the roster)
    parameters: str  # ParameterSet.fingerprint, hex
    mode: str  # "ckks"; "plaintext" only for an unencrypted baseline everyone agreed to
    threshold: int
    k_min: int
    k_max: int
    clients: tuple[RosterClient, ...]
    members: tuple[RosterMember, ...]
    admin_key: str  # Ed25519, hex: who signs this roster and its successors
    # uploads must carry proofs of well-formed ciphertexts (the parameter set says so too;
    # shown here for people). None: a roster signed before proofs existed, so no field.
    proofs: bool | None = None

    def canonical(self) -> bytes:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":")).encode()

    def as_dict(self) -> dict[str, Any]:
        """The fields, without ``proofs`` when it is None (older rosters' bytes unchanged)."""
        data = asdict(self)
        if data["proofs"] is None:
            del data["proofs"]
        return data

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(_DOMAIN + self.canonical()).digest()

    @property
    def fingerprint(self) -> str:
        """120 bits of the digest as 6 groups of 4 base32 letters: read it aloud to compare."""
        text = base64.b32encode(self.digest[:15]).decode()
        return "-".join(text[i : i + 4] for i in range(0, len(text), 4))

    def client_key(self, name: str) -> bytes | None:
        for client in self.clients:
            if client.name == name:
                return bytes.fromhex(client.signing_key)
        return None

    def member(self, index: int) -> RosterMember | None:
        for member in self.members:
            if member.index == index:
                return member
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Roster:
        try:
            return cls(
                federation=str(data["federation"]),
                version=int(data["version"]),
                epoch=int(data["epoch"]),
                parameters=str(data["parameters"]),
                mode=str(data["mode"]),
                threshold=int(data["threshold"]),
                k_min=int(data["k_min"]),
                k_max=int(data["k_max"]),
                clients=tuple(RosterClient(**c) for c in data["clients"]),
                members=tuple(RosterMember(**m) for m in data["members"]),
                admin_key=str(data["admin_key"]),
                proofs=None if data.get("proofs") is None else bool(data["proofs"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not a roster: {exc}") from exc


@dataclass(frozen=True)
class SignedRoster:
    roster: Roster
    signature: bytes  # the admin's Ed25519 signature over _DOMAIN ‖ canonical

    @classmethod
    def sign(cls, roster: Roster, sign: Any) -> SignedRoster:
        """``sign`` is the admin's signing function (an Ed25519 private key's ``sign``)."""
        return cls(roster, sign(_DOMAIN + roster.canonical()))

    def verify(self) -> Roster:
        """The roster, if its own admin key signed it; SignatureError otherwise."""
        try:
            verify_signature(
                bytes.fromhex(self.roster.admin_key),
                self.signature,
                _DOMAIN + self.roster.canonical(),
            )
        except (SignatureError, ValueError) as exc:
            raise SignatureError("the roster is not signed by its admin key") from exc
        return self.roster

    def check_successor_of(self, pinned: SignedRoster) -> Roster:
        """A roster change a party may follow; ProtocolError naming the first rule broken.

        Signed by the pinned admin, for the same federation, parameter set and mode, with a
        higher version and a later first epoch (every change is a new key epoch), and with
        stable identities: a name keeps its keys and its member index, and an index is
        never handed to another name (a replaced member comes back under a new name)."""
        new, old = self.verify(), pinned.roster
        if new.admin_key != old.admin_key:
            raise ProtocolError("the new roster is signed by another admin key than the pinned one")
        if new.federation != old.federation:
            raise ProtocolError("the new roster is for another federation")
        if new.version <= old.version or new.epoch <= old.epoch:
            raise ProtocolError(
                f"roster version {new.version} (epoch {new.epoch}) does not follow the pinned "
                f"version {old.version} (epoch {old.epoch})"
            )
        if (new.parameters, new.mode, new.proofs) != (old.parameters, old.mode, old.proofs):
            raise ProtocolError("a roster change cannot change the parameter set or the mode")
        _check_identities(old, new)
        return new

    def to_json(self) -> str:
        body = {"roster": self.roster.as_dict(), "signature": self.signature.hex()}
        return json.dumps(body, sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> SignedRoster:
        try:
            data = json.loads(text)
            return cls(Roster.from_dict(data["roster"]), bytes.fromhex(data["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not a signed roster file: {exc}") from exc


def _check_identities(old: Roster, new: Roster) -> None:
    before = {c.name: c.signing_key for c in old.clients}
    before.update({m.name: f"{m.signing_key}/{m.encryption_key}/{m.index}" for m in old.members})
    after = {c.name: c.signing_key for c in new.clients}
    after.update({m.name: f"{m.signing_key}/{m.encryption_key}/{m.index}" for m in new.members})
    for name in before.keys() & after.keys():
        if before[name] != after[name]:
            raise ProtocolError(
                f"{name!r} changes keys, role or member index: a replacement needs a new name"
            )
    indices = {m.index: m.name for m in old.members}
    for member in new.members:
        if indices.get(member.index, member.name) != member.name:
            raise ProtocolError(
                f"member index {member.index} belonged to {indices[member.index]!r}; "
                "a new member takes an index never used before"
            )


def follow(pinned: SignedRoster, chain: Sequence[SignedRoster]) -> SignedRoster:
    """The newest roster reachable from ``pinned`` through ``chain`` (the federation's
    rosters, oldest first, as served), each link checked by :meth:`SignedRoster.
    check_successor_of`. Rosters older than the pinned one are skipped; one that claims
    to follow it but breaks a rule raises ProtocolError."""
    current = pinned
    for offered in chain:
        if offered.roster.version <= current.roster.version:
            continue
        offered.check_successor_of(current)
        current = offered
    return current


def roster_for_epoch(chain: Sequence[SignedRoster], epoch: int) -> SignedRoster | None:
    """The roster that governs key epoch ``epoch``: the newest one whose first epoch is at
    or below it (``chain`` oldest first, already followed), or None."""
    governing = [s for s in chain if s.roster.epoch <= epoch]
    return max(governing, key=lambda s: s.roster.version) if governing else None
