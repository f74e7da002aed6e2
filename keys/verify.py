"""What a committee member checks before it decrypts: a decryption request plus the
member's local state in, a :class:`Decision` with its reason out. No I/O of its own.

Two decisions, both pure. :func:`endorse` (every member, for every round it sees
decrypting, whether or not it is named to decrypt): may this member endorse the round's
upload set (:mod:`he_agg.endorsement`)? It checks the state, the epoch, the ledger (not
finished, not pinned to another set, nothing signed before its floor), the upload list
(step 5 below) and every record's target and client signature (the signature covers the
body's sha256 in the record, so no blob is fetched). :func:`verify` (a member of the
decryption set): may it release a share?

The checks of :func:`verify`, in order (the first that fails is the reason):
  1. the round is decrypting and this member is in the named set;
  2. the request is for the key epoch this member holds a share of (``epoch``);
  3. the set is t distinct enrolled members;
  4. the ledger has not seen the round complete, nor a share for this attempt or a later
     one, nor a share for this round released before upload sets were pinned (a legacy
     ledger), and the budget τ is not spent;
  4a. if this member has an upgrade floor (it joined the committee under code without
     endorsements, :mod:`keys.ledger`), no listed upload was signed (its client-signed
     ``timestamp``) more than the server's clock skew before the floor: a round that code
     decrypted pinned only its t sharers, so a quorum could be gathered for a subset of it
     from members without a pin; the timestamp is under the client's signature (checked
     in step 8, and by :func:`endorse`), so the server cannot move it;
  5. the upload list names each client once, only enrolled clients, and
     K_min ≤ count ≤ K_max (K_min from the epoch's roster, K_max from the parameter set);
  6. if this member endorsed the round or already released a share for it, the list is
     exactly the set that pinned (:func:`upload_set_digest` of the (client, sha256)
     pairs, and the same aggregate digest): at most one upload set per round, whatever the
     attempt; only the decryption set may change;
  7. the request carries valid endorsements of exactly this set from at least
     q = ⌈(n + t)/2⌉ distinct members of the pinned roster (this member's own counts):
     two quorums share ≥ t members, so at least one honest one, who endorses one set per
     round; no other set of this round can reach a quorum, whichever members the server
     shows it to (the argument in full: :mod:`he_agg.endorsement`);
  8. each upload's blob has the recorded sha256, was signed for this federation's and
     round's upload target (:func:`he_agg.api.paths.update`, as the server builds it),
     carries its client's Ed25519 signature, and is a valid envelope for this round;
  9. the aggregate recomputed here (:func:`he_agg.aggregate.envelope_of_sum`, as the
     server builds it) has the sha256 the server announced.
Blobs come one at a time from the injected ``upload_blob`` and are summed as they come,
so a round's uploads are never all held in memory. A member that verified and added
uploads while the round was open (:class:`keys.presum.Presum`, each with every check of
step 8 by :func:`verified_upload`) passes that sum, and only the listed uploads it lacks
are fetched; the sum is used only if every client in it is listed with the same sha256.
An accepted :class:`Decision` carries the :class:`keys.ledger.Pin` that the agent records
before the share leaves.

An upload is bound to its federation and round by its client's signature over the
target, and to its key epoch by the envelope (format 2 names the epoch under the client's
signature, and step 8 decodes with the request's epoch). ``roster`` is the roster that
governs the round's epoch (:func:`he_agg.roster.roster_for_epoch` over the chain the
member followed from its pin): the committee, t, the clients and K_min are its. The
ledger counts τ per epoch, and a member refuses an epoch whose key shares it destroyed,
or an epoch other than the one a round was pinned in.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from he_agg.aggregate import ADD_WINDOW, RunningSum, envelope_of_sum
from he_agg.api import paths
from he_agg.api.models import DecryptionRequest, FederationCreate, UploadRecord
from he_agg.api.states import RoundState
from he_agg.endorsement import Endorsement, count_valid, quorum, upload_set_digest
from he_agg.envelope import EnvelopeView, Upload, decode_upload
from he_agg.errors import DecryptionRefused, EnvelopeError, ProtocolError
from he_agg.params import DEFAULT, ParameterSet
from he_agg.request_signing import SignedRequest, verify_signature
from he_agg.rlwe import KeyRows
from he_agg.roster import Roster
from he_agg.wellformed import ProofContext, ProofError, groups, verify_group
from he_agg.wording import counted
from keys.ledger import LedgerState, Pin
from keys.presum import Presum

__all__ = [
    "UPGRADE_SKEW_SECONDS",
    "Decision",
    "EndorseDecision",
    "UploadSource",
    "endorse",
    "endorsers",
    "enrolled_keys",
    "parameters",
    "upload_set_digest",
    "verified_upload",
    "verify",
]

UploadSource = Callable[[str], bytes]
"""The stored upload of one client (by name) in the round being verified."""


@dataclass(frozen=True)
class Decision:
    """Accepted with the recomputed aggregate, its sha256 and the round's upload-set pin,
    or refused with a reason."""

    accepted: bool
    reason: str
    aggregate: Upload | None = None
    digest: bytes | None = None
    pin: Pin | None = None

    def __post_init__(self) -> None:
        carried = (self.aggregate is not None, self.digest is not None, self.pin is not None)
        if carried != (self.accepted,) * 3:
            raise ValueError(
                "only an accepted decision carries the aggregate, its digest and the pin"
            )

    @classmethod
    def accept(cls, aggregate: Upload, digest: bytes, pin: Pin) -> Decision:
        return cls(True, "every check passed", aggregate, digest, pin)

    @classmethod
    def refuse(cls, reason: str) -> Decision:
        return cls(False, reason)


def parameters(config: FederationCreate) -> ParameterSet:
    """The federation's parameter set (the server always serves it; omitted: the default)."""
    return DEFAULT if config.parameters is None else ParameterSet.from_dict(config.parameters)


@dataclass(frozen=True)
class EndorseDecision:
    """Endorse with this (unsigned) endorsement, pinning the round to ``pin`` first, or
    refused with a reason."""

    accepted: bool
    reason: str
    endorsement: Endorsement | None = None
    pin: Pin | None = None

    def __post_init__(self) -> None:
        if (self.endorsement is not None, self.pin is not None) != (self.accepted,) * 2:
            raise ValueError("only an accepted decision carries the endorsement and the pin")


def endorse(
    request: DecryptionRequest,
    config: FederationCreate,
    ledger: LedgerState,
    member: int,
    federation: str,
    *,
    epoch: int,
    roster: Roster,
) -> EndorseDecision:
    """May ``member`` endorse the round's upload set? No blob is fetched: the list, the
    ledger and each record's target and client signature decide (the module docstring)."""
    params = parameters(config)
    try:
        if request.state != RoundState.DECRYPTING:
            raise DecryptionRefused(f"round {request.round} is not decrypting")
        _check_epoch(request, epoch)
        if request.round in ledger.completed:
            raise DecryptionRefused(f"round {request.round} was already decrypted")
        _check_legacy(request.round, ledger)
        _check_destroyed(request, ledger)
        keys = _check_upload_list(request.uploads, roster, params.k_max)
        _check_floor(request, ledger)
        pin = _check_pin(request, ledger, endorsing=True)
        for record in request.uploads:
            _check_record(record, keys[record.client], federation, request.round)
    except DecryptionRefused as exc:
        return EndorseDecision(False, str(exc))
    statement = Endorsement(federation, epoch, request.round, bytes.fromhex(pin.uploads), member)
    return EndorseDecision(True, "every check passed", statement, pin)


def endorsers(
    request: DecryptionRequest, roster: Roster, federation: str, *, epoch: int
) -> set[int]:
    """The roster members whose endorsements in ``request`` validly name its upload set;
    malformed ones, and ones for another set, round, epoch or federation, do not count."""
    parsed: list[Endorsement] = []
    for body in request.endorsements.values():
        try:
            parsed.append(Endorsement.from_bytes(body))
        except ProtocolError:
            continue
    digest = bytes.fromhex(upload_set_digest(request.uploads))
    return count_valid(parsed, roster, federation, epoch, request.round, digest)


def verify(
    request: DecryptionRequest,
    config: FederationCreate,
    ledger: LedgerState,
    member: int,
    federation: str,
    upload_blob: UploadSource,
    *,
    epoch: int,
    roster: Roster,
    proof_key: KeyRows | None = None,
    presum: Presum | None = None,
) -> Decision:
    """Every check of the module docstring, for the member ``member`` holding a key share of
    ``epoch`` and having pinned ``roster``; the aggregate to decrypt, or why not. With
    ``presum`` (this member's sum of uploads verified while the round was open), only the
    listed uploads it lacks are fetched and checked, if it is a part of the listed set."""
    params = parameters(config)
    try:
        _check_decryption_set(request, roster, member)
        _check_epoch(request, epoch)
        _check_ledger(request, ledger, params.tau)
        keys = _check_upload_list(request.uploads, roster, params.k_max)
        _check_floor(request, ledger)
        pin = _check_pin(request, ledger)
        _check_quorum(request, roster, federation, epoch)
        try:
            if presum is not None and presum.usable_for(request):
                missing = request.model_copy(update={"uploads": presum.missing(request)})
                for record, upload in zip(  # the sum holds the rest, verified
                    missing.uploads,
                    _verified_uploads(
                        missing, keys, params, federation, upload_blob, proof_key, roster
                    ),
                    strict=True,
                ):
                    presum.add(record, upload)
                total = presum.total()
                envelope = envelope_of_sum(total, params, federation, request.round, request.epoch)
            else:
                running: RunningSum | None = None
                for view in _verified_uploads(
                    request, keys, params, federation, upload_blob, proof_key, roster
                ):
                    running = running or RunningSum(params, view.count)
                    running.add_envelope(view, ADD_WINDOW)
                assert running is not None, "K_min ≥ 1 uploads are listed"
                total = running.result()
                envelope = envelope_of_sum(total, params, federation, request.round, request.epoch)
        except EnvelopeError as exc:
            raise DecryptionRefused(f"the listed uploads do not add up: {exc}") from exc
    except DecryptionRefused as exc:
        return Decision.refuse(str(exc))
    digest = hashlib.sha256(envelope).digest()
    if digest.hex() != request.aggregate_sha256:
        return Decision.refuse("the aggregate is not the sum of the listed uploads")
    return Decision.accept(decode_upload(envelope, params), digest, pin)


def _check_decryption_set(request: DecryptionRequest, roster: Roster, member: int) -> None:
    if request.state != RoundState.DECRYPTING or member not in request.decryption_set:
        raise DecryptionRefused("the round is not asking this member to decrypt")
    named = request.decryption_set
    enrolled = {m.index for m in roster.members}
    if (
        len(named) != roster.threshold
        or len(set(named)) != len(named)
        or not set(named) <= enrolled
    ):
        raise DecryptionRefused(
            f"the decryption set {named} is not t={roster.threshold} distinct enrolled members"
        )


def _check_epoch(request: DecryptionRequest, epoch: int) -> None:
    if request.epoch != epoch:
        raise DecryptionRefused(
            f"the request is for key epoch {request.epoch}; this check is for the key "
            f"of epoch {epoch}"
        )


def _check_ledger(request: DecryptionRequest, ledger: LedgerState, tau: int) -> None:
    number, attempt = request.round, request.attempt
    if number in ledger.completed:
        raise DecryptionRefused(f"round {number} was already decrypted")
    if not ledger.is_new_attempt(number, attempt):
        raise DecryptionRefused(f"round {number} attempt {attempt} is not a new attempt")
    _check_legacy(number, ledger)
    _check_destroyed(request, ledger)
    if ledger.spent_in(request.epoch) >= tau:
        raise DecryptionRefused(f"key epoch {request.epoch}'s decryption budget τ={tau} is spent")


def _check_destroyed(request: DecryptionRequest, ledger: LedgerState) -> None:
    if request.epoch in ledger.destroyed:
        raise DecryptionRefused(
            f"this member destroyed its key shares of epoch {request.epoch}: that epoch is over"
        )
    if ledger.pin(request.round) is not None and ledger.epoch_of(request.round) != request.epoch:
        raise DecryptionRefused(
            f"round {request.round} was pinned in key epoch {ledger.epoch_of(request.round)}, "
            f"the request says {request.epoch}"
        )


def _check_legacy(number: int, ledger: LedgerState) -> None:
    if ledger.shared(number) and ledger.pin(number) is None:
        raise DecryptionRefused(
            f"round {number} had a share released before upload sets were pinned (a legacy "
            "ledger): its upload set is unknown, so no further attempt is decrypted"
        )


UPGRADE_SKEW_SECONDS = 300
"""How far before the floor an upload may be signed and still count as after the upgrade:
the server's allowed clock skew, the default of ``max_skew_seconds`` in
:mod:`he_agg.server.config` (a client whose clock lags by that much still uploads)."""


def _check_floor(request: DecryptionRequest, ledger: LedgerState) -> None:
    """No upload predates this member's upgrade floor (step 4a)."""
    if ledger.floor is None:
        return
    earliest = ledger.floor - UPGRADE_SKEW_SECONDS
    for record in request.uploads:
        if record.timestamp < earliest:
            raise DecryptionRefused(
                f"upload of {record.client!r} was signed at {record.timestamp}, before this "
                f"member's upgrade floor {ledger.floor} (less {UPGRADE_SKEW_SECONDS} s of clock "
                f"skew): round {request.round} may have been decrypted before endorsements "
                "existed, so this member neither endorses nor decrypts it"
            )


def _check_pin(request: DecryptionRequest, ledger: LedgerState, *, endorsing: bool = False) -> Pin:
    """The round's pin: the one this member recorded (its endorsement, or an earlier
    share), which this list must match, or the one this list sets if there is none yet.
    An endorsement covers the set only, so ``endorsing`` does not compare the aggregate."""
    listed = Pin(upload_set_digest(request.uploads), request.aggregate_sha256, len(request.uploads))
    pinned = ledger.pin(request.round)
    if pinned is None:
        return listed
    if (listed.uploads, listed.count) != (pinned.uploads, pinned.count):
        raise DecryptionRefused(
            f"round {request.round} is pinned to the upload set {pinned.uploads[:16]}… "
            f"({pinned.count} uploads) by this member's endorsement or share; attempt "
            f"{request.attempt} lists another set ({listed.count} uploads, "
            f"{listed.uploads[:16]}…)"
        )
    if listed.aggregate != pinned.aggregate and not endorsing:
        raise DecryptionRefused(
            f"round {request.round} is pinned to the aggregate {pinned.aggregate[:16]}…; "
            f"attempt {request.attempt} announces {listed.aggregate[:16]}…"
        )
    return pinned


def _check_quorum(request: DecryptionRequest, roster: Roster, federation: str, epoch: int) -> None:
    valid = endorsers(request, roster, federation, epoch=epoch)
    n, t = len(roster.members), roster.threshold
    needed = quorum(n, t)
    if len(valid) < needed:
        raise DecryptionRefused(
            f"the upload set of round {request.round} is endorsed by {len(valid)} members "
            f"{sorted(valid)}; a quorum is q={needed} of n={n} (t={t})"
        )


def enrolled_keys(roster: Roster) -> dict[str, bytes]:
    """Each enrolled client's signing key, by name."""
    return {c.name: bytes.fromhex(c.signing_key) for c in roster.clients}


def _check_upload_list(uploads: list[UploadRecord], roster: Roster, k_max: int) -> dict[str, bytes]:
    """The signing key of every listed client, once each, all in the round epoch's roster,
    K_min (the roster's) to K_max."""
    enrolled = enrolled_keys(roster)
    seen: set[str] = set()
    for upload in uploads:
        if upload.client in seen:
            raise DecryptionRefused(f"the upload list names {upload.client!r} twice")
        if upload.client not in enrolled:
            raise DecryptionRefused(
                f"{upload.client!r} in the upload list is not an enrolled client"
            )
        seen.add(upload.client)
    if len(seen) < roster.k_min:
        raise DecryptionRefused(f"only {counted(len(seen), 'client')}, K_min is {roster.k_min}")
    if len(seen) > k_max:
        raise DecryptionRefused(
            f"{len(seen)} clients, more than the parameter set's K_max={k_max}: its noise "
            "bounds do not cover this aggregate"
        )
    return {name: enrolled[name] for name in seen}


def _verified_uploads(
    request: DecryptionRequest,
    keys: Mapping[str, bytes],
    params: ParameterSet,
    federation: str,
    upload_blob: UploadSource,
    proof_key: KeyRows | None,
    roster: Roster,
) -> Iterator[EnvelopeView]:
    """Fetch and check the listed uploads one at a time, for the running sum; with a
    parameter set that requires proofs, every upload's proofs are verified here too."""
    for record in request.uploads:
        yield verified_upload(
            record,
            keys[record.client],
            upload_blob(record.client),
            params,
            federation,
            request.round,
            request.epoch,
            proof_key,
            roster,
        )


def verified_upload(
    record: UploadRecord,
    key: bytes,
    blob: bytes,
    params: ParameterSet,
    federation: str,
    number: int,
    epoch: int,
    proof_key: KeyRows | None,
    roster: Roster,
) -> EnvelopeView:
    """One listed upload, checked as a member must before adding it: its blob is the one
    recorded, its client (``key``, from the roster) signed a PUT of it to this round, it is
    a valid envelope for this federation, round, client and key epoch with every word below
    its prime, and, with a parameter set that requires them, its proofs of well-formed
    ciphertexts verify against ``proof_key`` (the collective key of ``epoch``) and
    ``roster``, a proof group at a time. DecryptionRefused if not. The view it returns is
    added from its packed bytes (:meth:`he_agg.aggregate.RunningSum.add_envelope`)."""
    if params.proofs and proof_key is None:
        raise DecryptionRefused("no collective key to check the uploads' proofs against")
    _check_upload(record, key, blob, federation, number)
    try:
        view = EnvelopeView.parse(
            blob, params, federation=federation, round=number, client=record.client, epoch=epoch
        )
        if not params.proofs:
            view.check_words(ADD_WINDOW)  # with proofs, each group's words are checked below
    except EnvelopeError as exc:
        raise DecryptionRefused(
            f"upload of {record.client!r} is not a valid envelope for this round: {exc}"
        ) from exc
    if params.proofs:
        assert proof_key is not None
        context = ProofContext(
            params.fingerprint, federation, epoch, number, record.client, roster.digest
        )
        try:
            for (first, size), proof in zip(groups(view.count), view.proofs(), strict=True):
                bound = dataclasses.replace(context, first_index=first)
                verify_group(view.words(first, size), proof, proof_key, params, bound)
        except EnvelopeError as exc:
            raise DecryptionRefused(
                f"upload of {record.client!r} is not a valid envelope for this round: {exc}"
            ) from exc
        except ProofError as exc:
            raise DecryptionRefused(
                f"upload of {record.client!r} is not proven well formed: {exc}"
            ) from exc
    return view


def _check_upload(
    record: UploadRecord, key: bytes, blob: bytes, federation: str, number: int
) -> None:
    """The blob is the one recorded, and its client signed a PUT of it to this round."""
    digest = hashlib.sha256(blob).hexdigest()
    if digest != record.sha256:
        raise DecryptionRefused(
            f"upload of {record.client!r}: its sha256 does not match the record"
        )
    _check_record(record, key, federation, number)


def _check_record(record: UploadRecord, key: bytes, federation: str, number: int) -> None:
    """The record was signed by its client for a PUT of its sha256 to this round."""
    target = paths.update(federation, number, record.client)
    if record.target != target:
        raise DecryptionRefused(
            f"upload of {record.client!r} was signed for {record.target!r}, not {target!r}"
        )
    fields = ("PUT", target, record.sha256, record.timestamp, record.nonce, record.manifest)
    versions = (SignedRequest(*fields, length=record.size), SignedRequest(*fields))  # v2, v1
    try:
        signature = bytes.fromhex(record.signature)
    except ValueError as exc:
        raise DecryptionRefused(f"upload of {record.client!r} is not signed by it") from exc
    for signed in versions:
        try:
            verify_signature(key, signature, signed.canonical())
            return
        except ProtocolError:
            continue
    raise DecryptionRefused(f"upload of {record.client!r} is not signed by it")
