"""A committee member's durable ledger: the (round, attempt) shares it released, and the
rounds it saw finish. τ is counted here, on disk, before a share leaves the member.

On disk, ``ledger.json`` in the member's state folder:
``{"shares": [[round, attempt], ...], "completed": [round, ...]}``, in the order recorded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from he_agg.errors import KeyStoreError

__all__ = ["LEDGER_FILE", "Ledger", "LedgerState", "write_durably"]

LEDGER_FILE = "ledger.json"


def write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync the folder.

    A crash leaves either the old file or the new one, never a torn mix."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class LedgerState:
    """What this member has done, as read from disk. Every change returns a new state."""

    shares: tuple[tuple[int, int], ...] = ()
    completed: tuple[int, ...] = ()

    @property
    def spent(self) -> int:
        """Decryptions counted against τ: every (round, attempt) share released."""
        return len(self.shares)

    def shared(self, round: int) -> bool:
        return any(r == round for r, _ in self.shares)

    def is_new_attempt(self, round: int, attempt: int) -> bool:
        """No share went out for this round at this attempt or a later one."""
        return not any(r == round and a >= attempt for r, a in self.shares)

    def with_share(self, round: int, attempt: int) -> LedgerState:
        if (round, attempt) in self.shares:
            return self
        return LedgerState((*self.shares, (round, attempt)), self.completed)

    def with_completed(self, round: int) -> LedgerState:
        if round in self.completed:
            return self
        return LedgerState(self.shares, (*self.completed, round))

    def to_json(self) -> bytes:
        shares = [[r, a] for r, a in self.shares]
        return json.dumps({"shares": shares, "completed": list(self.completed)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LedgerState:
        """Parse the file; a malformed ledger is an error, never an empty one (τ would reset)."""
        try:
            raw = json.loads(data)
            shares = tuple((_integer(r), _integer(a)) for r, a in raw["shares"])
            completed = tuple(_integer(r) for r in raw["completed"])
        except (ValueError, TypeError, KeyError) as exc:
            raise KeyStoreError(f"the member ledger is malformed: {exc!r}") from exc
        return cls(shares, completed)


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


class Ledger:
    """The ledger file in one member's state folder; each record is read, changed, written."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LEDGER_FILE

    def load(self) -> LedgerState:
        if not self.path.exists():
            return LedgerState()
        return LedgerState.from_json(self.path.read_bytes())

    def save(self, state: LedgerState) -> None:
        write_durably(self.path, state.to_json())

    def record_share(self, round: int, attempt: int) -> LedgerState:
        """Count a share against τ; call before it is sent. Recording twice is harmless."""
        current = self.load()
        return self._keep(current, current.with_share(round, attempt))

    def record_completed(self, round: int) -> LedgerState:
        current = self.load()
        return self._keep(current, current.with_completed(round))

    def _keep(self, current: LedgerState, changed: LedgerState) -> LedgerState:
        if changed is not current:
            self.save(changed)
        return changed
