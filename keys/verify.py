"""What a committee member checks before it decrypts: a decryption request plus the
member's local state in, a :class:`Decision` with its reason out. No I/O of its own.

The checks, in order (the first that fails is the reason):
  1. the round is decrypting and this member is in the named set;
  2. the set is t distinct enrolled members;
  3. the ledger has not seen the round complete, nor a share for this attempt or a later
     one, and the budget τ is not spent;
  4. the upload list names each client once, only enrolled clients, and at least K_min;
  5. each upload's blob has the recorded sha256, was signed for this federation's and
     round's upload target (:func:`he_agg.api.paths.update`, as the server builds it),
     carries its client's Ed25519 signature, and is a valid envelope for this round;
  6. the aggregate recomputed here (:func:`he_agg.aggregate.aggregate_envelope`, as the
     server builds it) has the sha256 the server announced.
Blobs come one at a time from the injected ``upload_blob`` and are summed as they come,
so a round's uploads are never all held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from he_agg.aggregate import aggregate_envelope
from he_agg.api import paths
from he_agg.api.models import DecryptionRequest, FederationCreate, UploadRecord
from he_agg.api.states import RoundState
from he_agg.envelope import Upload, decode_upload
from he_agg.errors import DecryptionRefused, EnvelopeError, ProtocolError
from he_agg.params import DEFAULT, ParameterSet
from he_agg.request_signing import SignedRequest, verify_signature
from keys.ledger import LedgerState

__all__ = ["Decision", "UploadSource", "parameters", "verify"]

UploadSource = Callable[[str], bytes]
"""The stored upload of one client (by name) in the round being verified."""


@dataclass(frozen=True)
class Decision:
    """Accepted with the recomputed aggregate and its sha256, or refused with a reason."""

    accepted: bool
    reason: str
    aggregate: Upload | None = None
    digest: bytes | None = None

    def __post_init__(self) -> None:
        carried = (self.aggregate is not None, self.digest is not None)
        if carried != (self.accepted, self.accepted):
            raise ValueError("only an accepted decision carries the aggregate and its digest")

    @classmethod
    def accept(cls, aggregate: Upload, digest: bytes) -> Decision:
        return cls(True, "every check passed", aggregate, digest)

    @classmethod
    def refuse(cls, reason: str) -> Decision:
        return cls(False, reason)


def parameters(config: FederationCreate) -> ParameterSet:
    """The federation's parameter set (the server always serves it; omitted: the default)."""
    return DEFAULT if config.parameters is None else ParameterSet.from_dict(config.parameters)


def verify(
    request: DecryptionRequest,
    config: FederationCreate,
    ledger: LedgerState,
    member: int,
    federation: str,
    upload_blob: UploadSource,
) -> Decision:
    """Every check of the module docstring; the aggregate to decrypt, or why not."""
    params = parameters(config)
    try:
        _check_decryption_set(request, config, member)
        _check_ledger(request, ledger, params.tau)
        keys = _check_upload_list(request.uploads, config)
        uploads = _verified_uploads(request, keys, params, federation, upload_blob)
        try:
            envelope = aggregate_envelope(uploads, params, federation, request.round)
        except EnvelopeError as exc:
            raise DecryptionRefused(f"the listed uploads do not add up: {exc}") from exc
    except DecryptionRefused as exc:
        return Decision.refuse(str(exc))
    digest = hashlib.sha256(envelope).digest()
    if digest.hex() != request.aggregate_sha256:
        return Decision.refuse("the aggregate is not the sum of the listed uploads")
    return Decision.accept(decode_upload(envelope, params), digest)


def _check_decryption_set(
    request: DecryptionRequest, config: FederationCreate, member: int
) -> None:
    if request.state != RoundState.DECRYPTING or member not in request.decryption_set:
        raise DecryptionRefused("the round is not asking this member to decrypt")
    named = request.decryption_set
    enrolled = {m.index for m in config.members}
    if (
        len(named) != config.threshold
        or len(set(named)) != len(named)
        or not set(named) <= enrolled
    ):
        raise DecryptionRefused(
            f"the decryption set {named} is not t={config.threshold} distinct enrolled members"
        )


def _check_ledger(request: DecryptionRequest, ledger: LedgerState, tau: int) -> None:
    number, attempt = request.round, request.attempt
    if number in ledger.completed:
        raise DecryptionRefused(f"round {number} was already decrypted")
    if not ledger.is_new_attempt(number, attempt):
        raise DecryptionRefused(f"round {number} attempt {attempt} is not a new attempt")
    if ledger.spent >= tau:
        raise DecryptionRefused(f"decryption budget τ={tau} is spent")


def _check_upload_list(uploads: list[UploadRecord], config: FederationCreate) -> dict[str, bytes]:
    """The signing key of every listed client, once each, all enrolled, at least K_min."""
    enrolled = {c.name: bytes.fromhex(c.signing_key) for c in config.clients}
    seen: set[str] = set()
    for upload in uploads:
        if upload.client in seen:
            raise DecryptionRefused(f"the upload list names {upload.client!r} twice")
        if upload.client not in enrolled:
            raise DecryptionRefused(
                f"{upload.client!r} in the upload list is not an enrolled client"
            )
        seen.add(upload.client)
    if len(seen) < config.k_min:
        raise DecryptionRefused(f"only {len(seen)} clients, K_min is {config.k_min}")
    return {name: enrolled[name] for name in seen}


def _verified_uploads(
    request: DecryptionRequest,
    keys: Mapping[str, bytes],
    params: ParameterSet,
    federation: str,
    upload_blob: UploadSource,
) -> Iterator[Upload]:
    """Fetch, check and decode the listed uploads one at a time, for the running sum."""
    for record in request.uploads:
        blob = upload_blob(record.client)
        _check_upload(record, keys[record.client], blob, federation, request.round)
        try:
            yield decode_upload(
                blob, params, federation=federation, round=request.round, client=record.client
            )
        except EnvelopeError as exc:
            raise DecryptionRefused(
                f"upload of {record.client!r} is not a valid envelope for this round: {exc}"
            ) from exc


def _check_upload(
    record: UploadRecord, key: bytes, blob: bytes, federation: str, number: int
) -> None:
    """The blob is the one recorded, and its client signed a PUT of it to this round."""
    digest = hashlib.sha256(blob).hexdigest()
    if digest != record.sha256:
        raise DecryptionRefused(
            f"upload of {record.client!r}: its sha256 does not match the record"
        )
    target = paths.update(federation, number, record.client)
    if record.target != target:
        raise DecryptionRefused(
            f"upload of {record.client!r} was signed for {record.target!r}, not {target!r}"
        )
    signed = SignedRequest("PUT", target, digest, record.timestamp, record.nonce, record.manifest)
    try:
        verify_signature(key, bytes.fromhex(record.signature), signed.canonical())
    except (ProtocolError, ValueError) as exc:
        raise DecryptionRefused(f"upload of {record.client!r} is not signed by it") from exc
