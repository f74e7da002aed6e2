"""A committee member's durable, integrity-protected ledger: the (round, attempt) shares it
released, the upload set each round it endorsed or shared is pinned to, and the rounds it
saw finish. τ is counted here, on disk, before a share leaves the member; a round's pin is
written here before this member's endorsement of it (:mod:`he_agg.endorsement`) leaves.
The state itself (:class:`Pin`, :class:`LedgerState`) is pure data in
:mod:`keys.ledger_state`; this module is its files.

Files in the member's state folder, each written by :func:`write_durably` (temporary file
created with mode 0600, fsync, rename, fsync of the folder):

``ledger.json``
    ``{"format": 2, "federation": F, "seq": n, "shares": [[round, attempt], ...],
    "completed": [round, ...], "pins": [[round, {"uploads": hex, "aggregate": hex,
    "count": k}], ...], "floor": t, "mac": hex}``, lists in the order recorded; ``floor``
    (unix seconds) only in the ledger of a member upgraded from code without endorsements
    (below), absent otherwise. ``pins`` holds, for
    each round this member endorsed (or, before endorsements, released a share for), the
    canonical digest of its upload list (:func:`he_agg.endorsement.upload_set_digest`),
    the aggregate's sha256 and the upload count. A pin without a share is an endorsement.
    ``mac`` is HMAC-SHA256 under the ledger key over ``b"he-agg/ledger/v2\\0"`` followed by
    every other field as canonical JSON (sorted keys, no spaces): content and ``seq``
    together. ``seq`` grows by one with every write.
``ledger.seq``
    ``{"format": 2, "federation": F, "seq": n, "mac": hex}``: the high-water mark, MACed
    the same way under ``b"he-agg/ledger-seq/v2\\0"``, written right after each ledger.
``shares/{round}-{attempt}.bin``
    the decryption shares this member released (kept by :mod:`keys.agent`, moved into
    place only after the ledger records them), so each must be in the ledger.

The ledger key is HKDF-SHA256 of the member's long-term secret
(:meth:`keys.identity.Identity.private_bytes`), ``info = b"he-agg/ledger-mac/v1" +
federation``: only this member, in this federation, writes a ledger that it accepts.

**Detected** on every load (:class:`KeyStoreError`; the agent then releases no share):
  - an edited ``ledger.json`` or ``ledger.seq``, or one MACed under another member's or
    another federation's key, or malformed;
  - ``ledger.json`` replaced by an older copy of itself (a valid MAC, but a ``seq`` below
    the mark in ``ledger.seq``): a rollback of the ledger alone;
  - ``ledger.json`` deleted while ``ledger.seq`` or a released share file exists;
  - a share file ``shares/{r}-{a}.bin`` whose (r, a) the ledger lacks: catches an older
    ledger restored *together with* an older ``ledger.seq``, as long as the share files
    written since are still there;
  - a mark more than one write behind the ledger, or missing once the ledger is past its
    first write (the mark was restored or deleted: harmless by itself, but not a state
    any crash leaves);
  - a legacy, unMACed ``ledger.json`` once ``ledger.seq`` exists.

**Not detected**, and not detectable from this folder alone:
  - the whole state folder (``ledger.json``, ``ledger.seq`` and ``shares/``) restored to
    an earlier copy, or all three deleted: that looks exactly like this member at an
    earlier time. The same holds for the ledger and the mark restored together while the
    share files written since are deleted, and for the ledger and the mark restored
    together to before an endorsement (an endorsement leaves no file of its own): the
    member could then endorse a second set for that round, which is why the quorum
    tolerates t−1 members that misbehave, not more. Only state kept off this machine (a remote
    counter, a TPM monotonic counter, the other members) could tell;
  - anyone holding the member's identity key (its passphrase) can write valid files;
  - ``ledger.seq`` alone restored to an older copy exactly one write behind: that is the
    state a crash leaves (below), accepted and repaired; the ledger itself is current.

**Crash safety.** ``ledger.json`` is written before ``ledger.seq``: a crash between the
two leaves the ledger one write ahead of the mark, which is never what a rollback looks
like, so loading accepts it and brings the mark up. Written the other way round, a crash
would leave the mark one ahead: the very picture of a ledger rolled back by one write.

**Upgrade floor.** A member that joined the committee under code without endorsements
(its folder holds ``member.key`` but no ``key-statement.json``, which the DKG of
:mod:`keys.dkg` writes since it signs the collective key) gets a floor, the time it first
runs this code: :mod:`keys.agent` records it on its first ledger load, and a legacy ledger
upgraded here gets one too. It is MACed like every field and set once. Rounds that code
decrypted pinned only their t sharers; :mod:`keys.verify` refuses any upload signed
before the floor (less the server's clock skew), so this member never endorses or
decrypts them, nor a round in flight during the upgrade.

**Legacy format.** ``{"shares": [[round, attempt], ...], "completed": [round, ...]}``,
unMACed, as earlier versions wrote it, is accepted once, only while no ``ledger.seq``
exists: loading upgrades it in place (to ``seq`` 1, then the mark), so existing state
folders keep working. Share files it lacks (earlier agents stored a share before
recording it) are counted in. Its rounds have no pinned upload set, so
:func:`keys.verify.verify` refuses any further attempt of a round shared under it; and
the upgrade sets the floor (now).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from he_agg.errors import KeyStoreError
from keys.identity import Identity
from keys.ledger_state import LEDGER_FORMAT, LedgerState, Pin

__all__ = [
    "FILE_MODE",
    "LEDGER_FILE",
    "SEQ_FILE",
    "SHARES_DIR",
    "Ledger",
    "LedgerState",
    "Pin",
    "ledger_key",
    "replace_durably",
    "share_path",
    "write_durably",
]

LEDGER_FILE = "ledger.json"
SEQ_FILE = "ledger.seq"
SHARES_DIR = "shares"
FILE_MODE = 0o600

_FORMAT = LEDGER_FORMAT
_LEDGER_LABEL = b"he-agg/ledger/v2\0"
_SEQ_LABEL = b"he-agg/ledger-seq/v2\0"
_KEY_INFO = b"he-agg/ledger-mac/v1"
_SHARE_NAME = re.compile(r"([0-9]+)-([0-9]+)\.bin")
_REFUSING = "; no decryption share is released until an operator looks"

log = logging.getLogger("he_agg.member")


def write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file (mode 0600), fsync, rename, fsync
    the folder. A crash leaves either the old file or the new one, never a torn mix."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with open(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), FILE_MODE)  # a stale temporary file keeps its old mode
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    replace_durably(temporary, path)


def replace_durably(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` and make the rename itself durable."""
    os.replace(source, target)
    _fsync_directory(target.parent)


def _fsync_directory(folder: Path) -> None:
    """Make a rename durable (POSIX; a no-op where folders cannot be opened)."""
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


def ledger_key(identity: Identity, federation: str) -> bytes:
    """The member's ledger MAC key: HKDF-SHA256 of its long-term secret, per federation."""
    info = _KEY_INFO + federation.encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    return hkdf.derive(identity.private_bytes())


def share_path(state_dir: Path, round: int, attempt: int) -> Path:
    """Where the agent keeps the share it released for (round, attempt)."""
    return Path(state_dir) / SHARES_DIR / f"{round}-{attempt}.bin"


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: bytes, label: bytes, body: dict[str, Any]) -> bytes:
    return hmac.new(key, label + _canonical(body), hashlib.sha256).hexdigest().encode()


def _seal(key: bytes, label: bytes, body: dict[str, Any]) -> bytes:
    return _canonical({**body, "mac": _mac(key, label, body).decode()})


def _parse(data: bytes, name: str) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise KeyStoreError(f"the member {name} is malformed: {exc!r}") from exc
    if not isinstance(raw, dict):
        raise KeyStoreError(f"the member {name} is malformed: not an object")
    return raw


class Ledger:
    """The ledger files in one member's state folder; each record is read, checked, changed
    and written. Every read checks integrity and rollback (the module docstring). Records
    only ever add: there is no way to write a smaller ledger through this class."""

    def __init__(
        self,
        state_dir: Path,
        key: bytes,
        federation: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LEDGER_FILE
        self.seq_path = self.state_dir / SEQ_FILE
        self.federation = federation
        self._key = key
        self._clock = clock  # the floor a legacy ledger's upgrade sets

    def load(self) -> LedgerState:
        """The checked ledger; :class:`KeyStoreError` if it was edited, deleted or rolled back."""
        return self._checked()[0]

    def record_share(
        self, round: int, attempt: int, pin: Pin | None = None, epoch: int = 0
    ) -> LedgerState:
        """Count a share against the τ of the round's key epoch and pin its round; call (and
        return) before it is sent. Recording twice is harmless; another pin for a pinned
        round, or another epoch for it, raises DecryptionRefused."""
        current, seq = self._checked()
        changed = current.with_epoch(round, epoch).with_share(round, attempt, pin)
        return self._keep(current, changed, seq)

    def record_endorsement(self, round: int, pin: Pin, epoch: int = 0) -> LedgerState:
        """Pin the round (of key epoch ``epoch``) to the set this member endorses; call (and
        return) before the endorsement is sent. Spends no τ. Recording the same pin twice is
        harmless; another pin or epoch for a pinned round raises DecryptionRefused."""
        current, seq = self._checked()
        return self._keep(current, current.with_epoch(round, epoch).with_pin(round, pin), seq)

    def record_destroyed(self, epoch: int) -> LedgerState:
        """This member destroyed its secret shares of ``epoch``: it decrypts nothing under
        that epoch again. Call before the key files are removed."""
        current, seq = self._checked()
        return self._keep(current, current.with_destroyed(epoch), seq)

    def record_completed(self, *rounds: int) -> LedgerState:
        """Mark rounds finished (never endorsed or decrypted again); one write for all of
        them, none if every one is recorded already. Spends no τ."""
        current, seq = self._checked()
        changed = current
        for round in rounds:
            changed = changed.with_completed(round)
        return self._keep(current, changed, seq)

    def record_floor(self, at: int) -> LedgerState:
        """Set the upgrade floor (the module docstring) unless one is set; spends no τ."""
        current, seq = self._checked()
        return self._keep(current, current.with_floor(at), seq)

    def released(self) -> set[tuple[int, int]]:
        """The (round, attempt) of every share file in ``shares/``."""
        folder = self.state_dir / SHARES_DIR
        if not folder.is_dir():
            return set()
        found = (_SHARE_NAME.fullmatch(p.name) for p in folder.iterdir())
        return {(int(m[1]), int(m[2])) for m in found if m}

    # ---- reading, with every check ------------------------------------------------------
    def _checked(self) -> tuple[LedgerState, int]:
        mark = self._mark()
        if not self.path.exists():
            return self._missing(mark), 0
        raw = _parse(self.path.read_bytes(), "ledger")
        if "mac" not in raw and "format" not in raw:
            return self._upgrade(raw, mark)
        self._authentic(raw, _LEDGER_LABEL, "ledger.json")
        seq = raw["seq"]
        state = LedgerState.from_body(raw)
        self._check_mark(seq, mark)
        self._check_released(state)
        if mark != seq:  # one write ahead of the mark: a crash came between the two writes
            self._write_mark(seq)
        return state, seq

    def _authentic(self, raw: dict[str, Any], label: bytes, name: str) -> None:
        """Check the MAC, the format, the federation and the seq of a parsed file."""
        mac = raw.pop("mac", None)
        expected = _mac(self._key, label, raw)
        if not isinstance(mac, str) or not hmac.compare_digest(mac.encode(), expected):
            raise KeyStoreError(
                f"the member's {name} fails its integrity check (edited, or written under "
                f"another member's or federation's key){_REFUSING}"
            )
        seq = raw.get("seq")
        if raw.get("format") != _FORMAT or raw.get("federation") != self.federation:
            raise KeyStoreError(f"the member's {name} is of another format or federation")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise KeyStoreError(f"the member's {name} is malformed: seq {seq!r}")

    def _mark(self) -> int | None:
        """The high-water mark in ``ledger.seq``, checked; None if there is none."""
        if not self.seq_path.exists():
            return None
        raw = _parse(self.seq_path.read_bytes(), "ledger.seq")
        self._authentic(raw, _SEQ_LABEL, SEQ_FILE)
        seq: int = raw["seq"]
        return seq

    def _check_mark(self, seq: int, mark: int | None) -> None:
        if mark is None and seq != 1:
            raise KeyStoreError(
                f"{SEQ_FILE} is missing but the ledger was written {seq} times{_REFUSING}"
            )
        if mark is not None and seq < mark:
            raise KeyStoreError(
                f"the member ledger was rolled back: its seq {seq} is below the high-water "
                f"mark {mark} in {SEQ_FILE}{_REFUSING}"
            )
        if mark is not None and seq > mark + 1:
            raise KeyStoreError(
                f"{SEQ_FILE} ({mark}) is more than one write behind the ledger ({seq}): it "
                f"was restored or replaced{_REFUSING}"
            )

    def _check_released(self, state: LedgerState) -> None:
        unrecorded = sorted(self.released() - set(state.shares))
        if unrecorded:
            raise KeyStoreError(
                f"the member ledger was rolled back: shares/ holds released shares for "
                f"(round, attempt) {unrecorded} that it does not list{_REFUSING}"
            )

    def _missing(self, mark: int | None) -> LedgerState:
        if mark is not None:
            raise KeyStoreError(
                f"the member ledger is missing but {SEQ_FILE} shows {mark} writes{_REFUSING}"
            )
        released = self.released()
        if released:
            raise KeyStoreError(
                f"the member ledger is missing but shares/ holds {len(released)} released "
                f"shares{_REFUSING}"
            )
        return LedgerState()

    def _upgrade(self, raw: dict[str, Any], mark: int | None) -> tuple[LedgerState, int]:
        """Accept the legacy unMACed ledger once, while no mark exists, and MAC it in place."""
        if mark is not None:
            raise KeyStoreError(
                f"the member ledger is unMACed (the legacy format) but {SEQ_FILE} exists: "
                f"a MACed ledger was replaced{_REFUSING}"
            )
        state = LedgerState.from_legacy(raw).with_floor(int(self._clock()))
        for round, attempt in sorted(self.released() - set(state.shares)):
            state = state.with_share(round, attempt)  # stored, maybe sent: count it
        self._write(state, 1)
        log.info(
            "legacy member ledger upgraded to the MACed format",
            extra={"shares": state.spent, "floor": state.floor},
        )
        return state, 1

    # ---- writing ------------------------------------------------------------------------
    def _keep(self, current: LedgerState, changed: LedgerState, seq: int) -> LedgerState:
        if changed is not current:
            self._write(changed, seq + 1)
        return changed

    def _write(self, state: LedgerState, seq: int) -> None:
        """The ledger first, then the mark (see *Crash safety* above)."""
        write_durably(self.path, _seal(self._key, _LEDGER_LABEL, state.body(self.federation, seq)))
        self._write_mark(seq)

    def _write_mark(self, seq: int) -> None:
        body = {"format": _FORMAT, "federation": self.federation, "seq": seq}
        write_durably(self.seq_path, _seal(self._key, _SEQ_LABEL, body))
