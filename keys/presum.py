"""A member's sum of a round's uploads, kept while the round is open.

A member verifies each upload as it arrives (``GET …/updates``; every check
:func:`keys.verify.verified_upload` makes at decryption time, proofs included) and adds it
here, so that when the round is decrypting it holds the sum already and only checks and
adds what it has not seen. The sum is used only for a decryption request of the same
round and key epoch whose upload list names every client added here with the same
sha256; otherwise the member sums the listed uploads from scratch, as before. Either way
the aggregate it decrypts is exactly Σ of the listed, verified uploads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from he_agg.aggregate import ADD_WINDOW, RunningSum
from he_agg.api.models import DecryptionRequest, RoundOut, UploadRecord
from he_agg.envelope import EnvelopeView
from he_agg.modarith import U64Array
from he_agg.params import ParameterSet

__all__ = ["Presum"]


@dataclass
class Presum:
    """Σ of the verified uploads of one round (and key epoch), and what it includes."""

    params: ParameterSet
    round: int
    epoch: int
    included: dict[str, str] = field(default_factory=dict)  # client → sha256
    refused: dict[str, str] = field(default_factory=dict)  # client → why it was not added
    running: RunningSum | None = None

    def unseen(self, status: RoundOut) -> set[str]:
        """Clients the round lists that were neither added nor refused here yet."""
        return set(status.uploads) - set(self.included) - set(self.refused)

    def add(self, record: UploadRecord, upload: EnvelopeView) -> None:
        """Add a verified upload (once per client) from its packed bytes; MismatchError,
        before anything is added, if it does not fit."""
        if record.client in self.included:
            return
        if self.running is None:
            self.running = RunningSum(self.params, upload.count)
        self.running.add_envelope(upload, ADD_WINDOW)
        self.included[record.client] = record.sha256

    def usable_for(self, request: DecryptionRequest) -> bool:
        """Whether this sum is a part of ``request``'s: same round and epoch, and every
        client added here listed with the same sha256."""
        if (request.round, request.epoch) != (self.round, self.epoch):
            return False
        listed = {record.client: record.sha256 for record in request.uploads}
        return all(listed.get(client) == sha256 for client, sha256 in self.included.items())

    def missing(self, request: DecryptionRequest) -> list[UploadRecord]:
        """The listed uploads not added yet."""
        return [record for record in request.uploads if record.client not in self.included]

    def total(self) -> U64Array:
        assert self.running is not None, "nothing was added"
        return self.running.result()
