"""What a committee member has done, as pure data: the (round, attempt) shares it
released (τ is their count), the upload set each round is pinned to, and the rounds it saw
finish. :mod:`keys.ledger` reads and writes it, MACed and rollback-checked.

A round is pinned to one upload set (:class:`Pin`) by whichever comes first: this member's
endorsement of the set (:mod:`he_agg.endorsement`; spends no τ) or a share it released
for the round (older ledgers pinned only then). Either way the pin never changes: a
member endorses one set per round and decrypts only that set.

Key epochs. Each round belongs to one key epoch; the ledger records it when the round is
first pinned (``epochs``; a round without a record is epoch 0, as every round was before
epochs existed) and counts τ per epoch: a share spends the budget of its round's epoch
only. ``destroyed`` lists the epochs whose secret shares this member destroyed; it
decrypts nothing under them again.

The **floor** (unix seconds, or None) is set once, never moved, for a member that joined
the committee under code without endorsements (:mod:`keys.agent` sets it when such a member
first runs this code; :mod:`keys.ledger` when it upgrades a legacy ledger). A round that
code decrypted pinned only its t sharers, so a member without a pin for it could be talked
into a second set: :mod:`keys.verify` refuses every upload signed before the floor (less
the allowed clock skew).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from he_agg.errors import DecryptionRefused, KeyStoreError

__all__ = ["LEDGER_FORMAT", "LedgerState", "Pin"]

LEDGER_FORMAT = 2  # the MACed ledger file's format (keys.ledger)


@dataclass(frozen=True)
class Pin:
    """The one upload set a round may be decrypted for, fixed by this member's endorsement
    or, in older ledgers, by the first share it released."""

    uploads: str  # hex sha256 of the sorted (client, sha256) list: upload_set_digest
    aggregate: str  # hex sha256 of the aggregate envelope
    count: int  # how many uploads the set holds

    def to_json(self) -> dict[str, Any]:
        return {"uploads": self.uploads, "aggregate": self.aggregate, "count": self.count}

    @classmethod
    def from_json(cls, raw: Any) -> Pin:
        uploads, aggregate = raw["uploads"], raw["aggregate"]
        if not isinstance(uploads, str) or not isinstance(aggregate, str):
            raise TypeError(f"a pin holds hex digests, got {raw!r}")
        return cls(uploads, aggregate, _integer(raw["count"]))


@dataclass(frozen=True)
class LedgerState:
    """What this member has done, as read from disk. Every change returns a new state."""

    shares: tuple[tuple[int, int], ...] = ()
    completed: tuple[int, ...] = ()
    pins: tuple[tuple[int, Pin], ...] = ()
    floor: int | None = None  # unix seconds: uploads signed before it predate the upgrade
    epochs: tuple[tuple[int, int], ...] = ()  # (round, key epoch), recorded at its first pin
    destroyed: tuple[int, ...] = ()  # key epochs whose secret shares are gone

    @property
    def spent(self) -> int:
        """Every (round, attempt) share released, in every epoch."""
        return len(self.shares)

    def epoch_of(self, round: int) -> int:
        return next((e for r, e in self.epochs if r == round), 0)

    def spent_in(self, epoch: int) -> int:
        """Decryptions counted against the τ of ``epoch``."""
        return sum(1 for r, _ in self.shares if self.epoch_of(r) == epoch)

    def with_epoch(self, round: int, epoch: int) -> LedgerState:
        """Record the round's key epoch (epoch 0 is implicit: never written); another epoch
        for a round already pinned or shared is refused."""
        known = next((e for r, e in self.epochs if r == round), None)
        if known is None and (self.pin(round) is not None or self.shared(round)):
            known = 0
        if known is None:
            return self if epoch == 0 else replace(self, epochs=(*self.epochs, (round, epoch)))
        if known != epoch:
            raise DecryptionRefused(f"round {round} is of key epoch {known}, not {epoch}")
        return self

    def with_destroyed(self, epoch: int) -> LedgerState:
        if epoch in self.destroyed:
            return self
        return replace(self, destroyed=(*self.destroyed, epoch))

    def shared(self, round: int) -> bool:
        return any(r == round for r, _ in self.shares)

    def pin(self, round: int) -> Pin | None:
        """The upload set this round is pinned to (endorsed, or shared), if any."""
        return next((p for r, p in self.pins if r == round), None)

    def is_new_attempt(self, round: int, attempt: int) -> bool:
        """No share went out for this round at this attempt or a later one."""
        return not any(r == round and a >= attempt for r, a in self.shares)

    def with_share(self, round: int, attempt: int, pin: Pin | None = None) -> LedgerState:
        """Count (round, attempt), pinning the round to ``pin`` if it is not pinned yet.

        A pin other than the round's is refused: one upload set per round, ever."""
        pinned = self.pin(round)
        if pin is not None and pinned is not None and pin != pinned:
            raise DecryptionRefused(
                f"round {round} is pinned to upload set {pinned.uploads[:16]}…, "
                f"not {pin.uploads[:16]}…"
            )
        new_pin = pin is not None and pinned is None
        if (round, attempt) in self.shares and not new_pin:
            return self
        shares = self.shares
        if (round, attempt) not in shares:
            shares = (*shares, (round, attempt))
        pins = (*self.pins, (round, pin)) if pin is not None and new_pin else self.pins
        return replace(self, shares=shares, pins=pins)

    def with_pin(self, round: int, pin: Pin) -> LedgerState:
        """Pin the round to ``pin`` (this member endorsed it); spends no τ. The same pin again
        changes nothing; another pin for a pinned round is refused."""
        pinned = self.pin(round)
        if pinned is None:
            return replace(self, pins=(*self.pins, (round, pin)))
        if pinned != pin:
            raise DecryptionRefused(
                f"round {round} is pinned to upload set {pinned.uploads[:16]}… (aggregate "
                f"{pinned.aggregate[:16]}…), not {pin.uploads[:16]}… ({pin.aggregate[:16]}…)"
            )
        return self

    def with_completed(self, round: int) -> LedgerState:
        if round in self.completed:
            return self
        return replace(self, completed=(*self.completed, round))

    def with_floor(self, at: int) -> LedgerState:
        """Set the upgrade floor to ``at`` unless one is set: the first floor stays."""
        return self if self.floor is not None else replace(self, floor=at)

    def body(self, federation: str, seq: int) -> dict[str, Any]:
        """The MACed fields of the file (everything but ``mac``); ``floor`` only if set,
        ``epochs`` and ``destroyed`` only if non-empty: a ledger without them is byte for
        byte what earlier format-2 agents wrote."""
        floor = {} if self.floor is None else {"floor": self.floor}
        if self.epochs:
            floor["epochs"] = [[r, e] for r, e in self.epochs]  # type: ignore[assignment]
        if self.destroyed:
            floor["destroyed"] = list(self.destroyed)  # type: ignore[assignment]
        return {
            **floor,
            "format": LEDGER_FORMAT,
            "federation": federation,
            "seq": seq,
            "shares": [[r, a] for r, a in self.shares],
            "completed": list(self.completed),
            "pins": [[r, p.to_json()] for r, p in self.pins],
        }

    @classmethod
    def from_body(cls, raw: Any) -> LedgerState:
        """Parse the fields of a MACed (format 2) ledger; the caller checked the MAC."""
        try:
            pins = tuple((_integer(r), Pin.from_json(p)) for r, p in raw["pins"])
            floor = _integer(raw["floor"]) if "floor" in raw else None
            epochs = tuple((_integer(r), _integer(e)) for r, e in raw.get("epochs", []))
            destroyed = tuple(_integer(e) for e in raw.get("destroyed", []))
            legacy = cls.from_legacy(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise KeyStoreError(f"the member ledger is malformed: {exc!r}") from exc
        return cls(legacy.shares, legacy.completed, pins, floor, epochs, destroyed)

    @classmethod
    def from_legacy(cls, raw: Any) -> LedgerState:
        """Parse ``shares`` and ``completed``; a malformed ledger is an error, never an empty
        one (τ would reset)."""
        try:
            shares = tuple((_integer(r), _integer(a)) for r, a in raw["shares"])
            completed = tuple(_integer(r) for r in raw["completed"])
        except (ValueError, TypeError, KeyError) as exc:
            raise KeyStoreError(f"the member ledger is malformed: {exc!r}") from exc
        return cls(shares, completed)


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value
