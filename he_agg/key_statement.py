"""Members' signed statements about the collective key, and the client's check of them.

After the DKG every enrolled member signs
    (federation, epoch, roster digest, sha256 of the collective public key, "pk1 = CRS")
once it has itself checked that the served key is the sum of the revealed shares. A
client encrypts only under a key for which it holds a valid statement from **every**
member of its pinned roster, and whose second polynomial it recomputed from the CRS
itself: a server that serves a key of its own has no member signatures for it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from he_agg.crs import common_reference_polynomial
from he_agg.errors import HeAggError, ProtocolError, SignatureError
from he_agg.params import ParameterSet
from he_agg.public import PublicContext
from he_agg.request_signing import verify_signature
from he_agg.roster import Roster
from he_agg.seal_codec import ciphertext_from_bytes

__all__ = ["KeyStatement", "key_digest", "verify_collective_key"]

_DOMAIN = b"he-agg/key-statement/v1\x00"


def key_digest(public_key: bytes) -> bytes:
    """sha256 of the collective key's SEAL bytes, as served."""
    return hashlib.sha256(public_key).digest()


@dataclass(frozen=True)
class KeyStatement:
    federation: str
    epoch: int
    member: int
    roster_digest: bytes
    public_key_digest: bytes
    signature: bytes = b""

    def message(self) -> bytes:
        """What the member signs: every field, and that the key's second half is the CRS."""
        return (
            _DOMAIN
            + self.federation.encode()
            + b"\x00"
            + struct.pack("<QI", self.epoch, self.member)
            + self.roster_digest
            + self.public_key_digest
            + b"pk1=crs"
        )

    def signed(self, sign: Any) -> KeyStatement:
        return KeyStatement(
            self.federation,
            self.epoch,
            self.member,
            self.roster_digest,
            self.public_key_digest,
            sign(self.message()),
        )

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "federation": self.federation,
                "epoch": self.epoch,
                "member": self.member,
                "roster_digest": self.roster_digest.hex(),
                "public_key_digest": self.public_key_digest.hex(),
                "signature": self.signature.hex(),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> KeyStatement:
        try:
            raw = json.loads(data)
            return cls(
                str(raw["federation"]),
                int(raw["epoch"]),
                int(raw["member"]),
                bytes.fromhex(raw["roster_digest"]),
                bytes.fromhex(raw["public_key_digest"]),
                bytes.fromhex(raw["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not a key statement: {exc}") from exc


def _check_statement(
    statement: KeyStatement | None, roster: Roster, index: int, digest: bytes, epoch: int
) -> None:
    member = roster.member(index)
    assert member is not None
    if statement is None:
        raise ProtocolError(f"member {index} ({member.name}) has not signed the collective key")
    expected = (roster.federation, epoch, index, roster.digest, digest)
    got = (
        statement.federation,
        statement.epoch,
        statement.member,
        statement.roster_digest,
        statement.public_key_digest,
    )
    if got[:3] != expected[:3]:
        raise ProtocolError(f"member {index}'s key statement is for another federation or epoch")
    if statement.roster_digest != roster.digest:
        raise ProtocolError(f"member {index} signed the key under another roster")
    if statement.public_key_digest != digest:
        raise ProtocolError(f"member {index} signed another public key than the one served")
    try:
        verify_signature(
            bytes.fromhex(member.signing_key), statement.signature, statement.message()
        )
    except SignatureError as exc:
        raise ProtocolError(f"member {index}'s key statement has a bad signature") from exc


def verify_collective_key(
    public_key: bytes,
    statements: Mapping[int, KeyStatement],
    roster: Roster,
    params: ParameterSet,
    epoch: int | None = None,
) -> PublicContext:
    """The key of ``epoch`` (omitted: the roster's first) a client may encrypt under, or
    ProtocolError naming what failed.

    Checks: the epoch is one the roster governs; the parameter set is the roster's; the
    key parses for it; its second polynomial is exactly the CRS this client recomputes;
    every roster member signed a statement for this key, roster and epoch.
    """
    epoch = roster.epoch if epoch is None else epoch
    if epoch < roster.epoch:
        raise ProtocolError(f"key epoch {epoch} is before the roster's first epoch {roster.epoch}")
    if params.fingerprint.hex() != roster.parameters:
        raise ProtocolError("the served parameter set is not the one in the pinned roster")
    try:
        parsed = ciphertext_from_bytes(public_key)
        context = PublicContext(params, parsed)
    except HeAggError as exc:
        raise ProtocolError(f"the served public key does not parse: {exc}") from exc
    crs = common_reference_polynomial(params, roster.federation)
    if not np.array_equal(parsed.data[1], crs):
        raise ProtocolError("the public key's second polynomial is not the federation's CRS")
    digest = key_digest(public_key)
    for member in roster.members:
        _check_statement(statements.get(member.index), roster, member.index, digest, epoch)
    return context
