"""Endorsements: a quorum of committee members fixes ONE upload set per round.

Why. A member used to pin a round's upload set only when *it* released a share. A
member outside the first decryption set had no pin, so a lying aggregator could get
one decryption of {c1, c2, c3} from members {1, 2} and another of {c1, c2} from {1, 3}
(or, with n ≥ 2t, from the disjoint {3, 4} alone); the difference is c3's update. Up to
t−1 members may also collude with the aggregator, so a per-member pin never suffices.

How. Every member k, whether or not it is named to decrypt, signs (Ed25519)

    "he-agg/endorsement/v1\\0" ‖ federation ‖ "\\0" ‖ epoch, round, k (u64, u64, u32 LE)
    ‖ upload-set digest (32 bytes, :func:`upload_set_digest`)

for at most one upload set per round, after checking the upload records itself, and it
records that pin durably before the endorsement leaves. A member releases a decryption
share only for a set that carries valid endorsements from at least

    q = ⌈(n + t) / 2⌉

distinct members of its pinned roster (:func:`quorum`, :func:`count_valid`).

The argument. Two quorums Q1, Q2 ⊆ {1..n} with |Q1| = |Q2| = q share at least
2q − n ≥ (n + t) − n = t members. At most t − 1 members are corrupt, so at least one
member in the intersection is honest, and an honest member endorses one set per round.
Hence two different upload sets of the same round can never both reach a quorum: every
share any honest member releases for round R is for the same set, whatever the
aggregator shows to whom (a split view, a re-list with a subset, a replay). A decryption
takes t shares, so at least one from an honest member: only that one set of round R is
ever decrypted. The t − 1 corrupt members can sign anything; they alone (t − 1 < q) never
make a quorum.

The cost is availability: q members must be online to endorse a round and t of them to
decrypt it (n=3, t=2 → q=3; n=4, t=2 → q=3; n=5, t=3 → q=4).

This module is core: pure data and signature checks, no I/O. The member's checks before
endorsing are in :mod:`keys.verify`, the server's in :mod:`he_agg.server.publishing`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from he_agg.errors import ProtocolError, SignatureError
from he_agg.request_signing import verify_signature
from he_agg.roster import Roster

__all__ = ["Endorsement", "UploadEntry", "count_valid", "quorum", "upload_set_digest"]

_DOMAIN = b"he-agg/endorsement/v1\x00"
_DIGEST_BYTES = 32


class UploadEntry(Protocol):
    """What the set digest reads of an upload record (``he_agg.api.models.UploadRecord``)."""

    @property
    def client(self) -> str: ...

    @property
    def sha256(self) -> str: ...


def upload_set_digest(uploads: Iterable[UploadEntry]) -> str:
    """The canonical digest of an upload list: sha256 over its (client, sha256) pairs,
    sorted, as compact JSON, after a domain label. The order the server lists them in and
    every other field of the records do not change it.

    Members' ledgers store this value (hex): its definition must never change."""
    pairs = sorted([u.client, u.sha256] for u in uploads)
    encoded = json.dumps(pairs, separators=(",", ":")).encode()
    return hashlib.sha256(b"he-agg/upload-set/v1\0" + encoded).hexdigest()


def quorum(n: int, t: int) -> int:
    """q = ⌈(n + t) / 2⌉: any two sets of q of the n members share ≥ t of them."""
    if not 1 <= t <= n:
        raise ValueError(f"a threshold t={t} needs 1 ≤ t ≤ n={n}")
    return (n + t + 1) // 2


@dataclass(frozen=True)
class Endorsement:
    """Member ``member``'s signed statement: round ``round`` of ``federation`` (key epoch
    ``epoch``) is to be decrypted for the upload set ``upload_set`` and no other."""

    federation: str
    epoch: int
    round: int
    upload_set: bytes  # the raw 32 bytes of upload_set_digest
    member: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        if len(self.upload_set) != _DIGEST_BYTES:
            raise ValueError(f"an upload-set digest is {_DIGEST_BYTES} bytes")
        if "\x00" in self.federation:
            raise ValueError("a federation id holds no NUL")
        if min(self.epoch, self.round, self.member) < 0:
            raise ValueError("epoch, round and member are not negative")

    def message(self) -> bytes:
        """The domain-separated bytes the member signs (every field but the signature)."""
        return (
            _DOMAIN
            + self.federation.encode()
            + b"\x00"
            + struct.pack("<QQI", self.epoch, self.round, self.member)
            + self.upload_set
        )

    def signed(self, sign: Callable[[bytes], bytes]) -> Endorsement:
        """This endorsement signed by ``sign`` (the member's Ed25519 ``sign``)."""
        return Endorsement(
            self.federation,
            self.epoch,
            self.round,
            self.upload_set,
            self.member,
            sign(self.message()),
        )

    def verify(self, public_key: bytes) -> None:
        """SignatureError unless ``public_key`` signed exactly this endorsement."""
        verify_signature(public_key, self.signature, self.message())

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "federation": self.federation,
                "epoch": self.epoch,
                "round": self.round,
                "upload_set": self.upload_set.hex(),
                "member": self.member,
                "signature": self.signature.hex(),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Endorsement:
        """Parse :meth:`to_bytes`; ProtocolError for anything else."""
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            federation, upload_set, signature = (
                raw[k] for k in ("federation", "upload_set", "signature")
            )
            if not all(isinstance(v, str) for v in (federation, upload_set, signature)):
                raise TypeError("federation, upload_set and signature are strings")
            return cls(
                federation,
                _integer(raw["epoch"]),
                _integer(raw["round"]),
                bytes.fromhex(upload_set),
                _integer(raw["member"]),
                bytes.fromhex(signature),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not an endorsement: {exc}") from exc


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def count_valid(
    endorsements: Iterable[Endorsement],
    roster: Roster,
    federation: str,
    epoch: int,
    round: int,
    upload_set: bytes,
) -> set[int]:
    """The distinct roster members who validly endorsed exactly this (federation, epoch,
    round, upload set). Anything else (another set, a signer not in the roster, a bad
    signature) is not counted; a member endorsing twice counts once."""
    wanted = (federation, epoch, round, upload_set)
    valid: set[int] = set()
    for endorsement in endorsements:
        got = (endorsement.federation, endorsement.epoch, endorsement.round)
        if (*got, endorsement.upload_set) != wanted or endorsement.member in valid:
            continue
        member = roster.member(endorsement.member)
        if member is None:
            continue
        try:
            endorsement.verify(bytes.fromhex(member.signing_key))
        except (SignatureError, ValueError):
            continue
        valid.add(endorsement.member)
    return valid
