"""The committee member agent: the loop that polls the aggregator over HTTP, joins the DKG
(:mod:`keys.dkg`), then decrypts only round aggregates that :func:`keys.verify.verify` accepts.

For every round it sees decrypting, named or not, the member first endorses the round's
upload set (:func:`keys.verify.endorse`; the round is pinned in the ledger, fsynced,
before the signed endorsement is PUT), at most one set per round. A member of the
decryption set then releases its share only once the request carries a quorum of
endorsements of that set (:mod:`he_agg.endorsement`); until then it waits, saying so once.
Every round it sees published or aborted is recorded completed (one write when one is
new), touched or not, and never endorsed or decrypted again. A member whose DKG ran before
endorsements (``member.key`` but no key statement record) gets its upgrade floor on the
first ledger load (:mod:`keys.ledger`, *Upgrade floor*).

Key epochs. Each step the member follows the admin's signed roster chain from its pin
(:func:`he_agg.roster.follow`; the newest reachable roster is pinned), runs the DKG of the
newest epoch if that epoch's roster names it (:class:`keys.dkg.MemberKeygen`, one folder per
epoch), and decrypts each round with the key of the round's epoch, checked against the
roster its own key statement for that epoch names (so the server cannot swap rosters).
Once an epoch is retired, or its τ is spent in this member's ledger, the member records
it destroyed and overwrites and removes its secrets (:func:`keys.dkg.destroy_epoch`).

A refusal is logged with its reason. A share is kept (fsynced) as ``shares/{r}-{a}.pending``,
then counted in the ledger with the round's pinned upload set (fsynced), then moved to
``shares/{r}-{a}.bin``, and only then sent; it is re-sent byte for byte on a retry or after a
crash: recomputing it with fresh noise would let the two be averaged. A ledger that fails its
integrity or rollback checks (:mod:`keys.ledger`) stops every release, with a log line.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import TypeAdapter

from he_agg.api import paths
from he_agg.api.models import (
    DecryptionRequest,
    EpochOut,
    FederationCreate,
    FederationOut,
    KeygenStatus,
    RoundOut,
    UploadRecord,
)
from he_agg.api.roster_check import genesis_mismatch
from he_agg.api.states import RoundState
from he_agg.api.transport import SignedClient
from he_agg.api.watching import Watcher
from he_agg.endorsement import Endorsement, quorum, upload_set_digest
from he_agg.errors import (
    DecryptionRefused,
    EnvelopeError,
    HeAggError,
    KeyStoreError,
    ProtocolError,
    ServiceError,
)
from he_agg.key_statement import KeyStatement, key_digest
from he_agg.memory import release_free_memory
from he_agg.packed_sum import warm
from he_agg.params import ParameterSet
from he_agg.public import PublicContext
from he_agg.rlwe import KeyRows, key_rows
from he_agg.roster import Roster, SignedRoster, follow, roster_for_epoch
from he_agg.seal_codec import ciphertext_from_bytes
from keys.decrypt import decryption_share
from keys.dkg import (
    DKG_SECRET,
    KEY_STATEMENT_FILE,
    MEMBER_KEY,
    SECRET_FILES,
    MemberKeygen,
    destroy_epoch,
    epoch_dir,
)
from keys.identity import Identity
from keys.ledger import (
    Ledger,
    LedgerState,
    Pin,
    ledger_key,
    replace_durably,
    share_path,
    write_durably,
)
from keys.member import MemberSecrets
from keys.pinning import pin_roster
from keys.presum import Presum
from keys.verify import (
    Decision,
    endorse,
    endorsers,
    enrolled_keys,
    parameters,
    verified_upload,
    verify,
)

__all__ = ["MemberAgent", "wait"]

log = logging.getLogger("he_agg.member")

_ROUNDS = TypeAdapter(list[RoundOut])
LONG_POLL_SECONDS = 5.0  # the longest a member's loop waits for a change (and to stop)
_EPOCHS = TypeAdapter(list[EpochOut])


class MemberAgent:
    def __init__(
        self,
        client: SignedClient,
        federation: str,
        identity: Identity,
        state_dir: Path,
        passphrase: str,
        roster: SignedRoster | None = None,
    ) -> None:
        self.http = client
        self.federation = federation
        self.identity = identity
        self.state_dir = Path(state_dir)
        (self.state_dir / "shares").mkdir(parents=True, exist_ok=True)
        self.passphrase = passphrase
        self.roster = pin_roster(self.state_dir, federation, roster)
        self.rosters: dict[bytes, SignedRoster] = {self.roster.roster.digest: self.roster}
        self._ledger = Ledger(self.state_dir, ledger_key(identity, federation), federation)
        self._keygens: dict[int, MemberKeygen] = {}
        self._secrets: dict[int, MemberSecrets] = {}
        self._proof_keys: dict[int, KeyRows] = {}
        self._warned = False
        self._warming = False
        self._sent: set[tuple[int, int]] = set()  # delivered since start; re-sent after a restart
        self._said: set[tuple[int, int, str]] = set()  # (round, attempt, what) logged once
        self._presums: dict[int, Presum] = {}  # open rounds' uploads, verified and added
        self.watcher = Watcher(client, federation)
        old = _joined_before_endorsements(self.state_dir)
        self._floor = int(time.time()) if old else None  # recorded on the first ledger load

    @property
    def index(self) -> int:
        return self.identity.index

    @property
    def epoch(self) -> int:
        """The newest key epoch this member holds a key share of (or is generating)."""
        held = self.held_epochs()
        return max(held) if held else self.roster.roster.epoch

    @property
    def dkg(self) -> MemberKeygen:
        """The key generation of the newest epoch this member takes part in."""
        return self._keygen(self.epoch, self.roster.roster)

    def held_epochs(self) -> list[int]:
        """Epochs whose member key is on disk."""
        return self._epochs_with(MEMBER_KEY)

    def _epochs_with(self, *names: str) -> list[int]:
        """Epochs whose folder holds any of the files ``names``."""
        found = [0] if any((self.state_dir / n).exists() for n in names) else []
        folder = self.state_dir / "epochs"
        if folder.is_dir():
            found += [
                int(p.name)
                for p in folder.iterdir()
                if p.name.isdigit() and any((p / n).exists() for n in names)
            ]
        return sorted(found)

    def _keygen(self, epoch: int, roster: Roster) -> MemberKeygen:
        keygen = self._keygens.get(epoch)
        if keygen is None or keygen.roster != roster:
            folder = epoch_dir(self.state_dir, epoch)
            keygen = MemberKeygen(
                self.http, self.federation, self.identity, folder, self.passphrase, roster, epoch
            )
            self._keygens[epoch] = keygen
        return keygen

    # ---- what the aggregator serves ----------------------------------------------
    def config(self) -> FederationCreate:
        """The served configuration, only if it says what its own (creation) roster says,
        that roster is signed by the pinned admin for this federation, and the parameter
        set and mode are the pinned roster's (checked before anything is done with it,
        first contact included); later changes are refused."""
        pinned = self.state_dir / "federation.json"
        response = self.http.request("GET", paths.federation(self.federation))
        served = FederationOut.model_validate(response.json()).config
        problem = genesis_mismatch(served, self.roster)
        if problem:
            raise ProtocolError(f"the server's federation configuration: {problem}")
        if not pinned.exists():
            write_durably(pinned, _canonical(served))
            self._warn_without_proofs(served)
            return served
        config = FederationCreate.model_validate_json(pinned.read_bytes())
        if _canonical(served) != _canonical(config):
            raise ProtocolError("the server's federation configuration changed since enrolment")
        self._warn_without_proofs(config)
        return config

    def _warn_without_proofs(self, config: FederationCreate) -> None:
        """Once per start: a parameter set without upload proofs trusts every client."""
        if self._warned or parameters(config).proofs:
            return
        self._warned = True
        log.warning(
            "this federation's parameter set has no proofs of well-formed uploads: one "
            "client colluding with the server can extract the collective key (SECURITY.md)",
            extra={"member": self.index, "federation": self.federation},
        )

    def follow_rosters(self) -> SignedRoster:
        """Follow the admin's signed chain from the pinned roster; pin the newest. Every
        authentic roster of the chain (the pinned admin's signature, this federation) is
        kept by digest: a round's epoch is checked against the one its key statement names."""
        served = json.loads(self.http.request("GET", paths.rosters(self.federation)).content)
        chain = [SignedRoster.from_json(text) for text in served]
        newest = follow(self.roster, chain)
        if newest.to_json() != self.roster.to_json():
            self.roster = pin_roster(self.state_dir, self.federation, newest)
        for signed in chain:
            try:
                roster = signed.verify()
            except HeAggError:
                continue
            if (roster.admin_key, roster.federation) == (
                self.roster.roster.admin_key,
                self.federation,
            ):
                self.rosters[roster.digest] = signed
        self.rosters[self.roster.roster.digest] = self.roster
        return self.roster

    def epochs(self) -> list[EpochOut]:
        return _EPOCHS.validate_python(
            self.http.request("GET", paths.epochs(self.federation)).json()
        )

    def roster_of(self, epoch: int) -> Roster | None:
        """The roster this member's own key statement of ``epoch`` names, if it holds one."""
        path = epoch_dir(self.state_dir, epoch) / KEY_STATEMENT_FILE
        if path.exists():
            digest = KeyStatement.from_bytes(path.read_bytes()).roster_digest
            signed = self.rosters.get(digest)
            return None if signed is None else signed.roster
        if epoch == 0 and (self.state_dir / MEMBER_KEY).exists():
            return self.roster.roster if self.roster.roster.epoch == 0 else None  # pre-statements
        return None

    def rounds(self) -> list[RoundOut]:
        return _ROUNDS.validate_python(
            self.http.request("GET", paths.rounds(self.federation)).json()
        )

    def decryption_request(self, number: int) -> DecryptionRequest:
        response = self.http.request("GET", paths.decryption(self.federation, number))
        return DecryptionRequest.model_validate(response.json())

    def upload_blob(self, number: int, client: str) -> bytes:
        return self.http.request("GET", paths.update(self.federation, number, client)).content

    def ledger(self) -> LedgerState:
        """The checked ledger; an edited, deleted or rolled-back one is logged and raises."""
        try:
            state = self._ledger.load()
            if self._floor is not None and state.floor is None:  # keys.ledger: Upgrade floor
                state = self._ledger.record_floor(self._floor)
                log.info("upgrade floor set", extra={"member": self.index, "floor": state.floor})
            self._floor = None
            return state
        except KeyStoreError as exc:
            log.error(
                "member ledger refused: no decryption share is released",
                extra={"member": self.index, "reason": str(exc)},
            )
            raise

    # ---- the loop ------------------------------------------------------------------
    def run(
        self,
        stop: threading.Event | None = None,
        poll: float = 0.5,
        until: Callable[[], bool] | None = None,
    ) -> None:
        stop = stop or threading.Event()
        while not stop.is_set() and not (until and until()):
            try:
                self.step()
            except (ServiceError, OSError, HeAggError) as exc:
                log.warning("member step failed", extra={"member": self.index, "error": str(exc)})
            except Exception as exc:  # connection trouble: try again next tick
                log.warning("member step failed", extra={"member": self.index, "error": repr(exc)})
            if stop.is_set():
                break
            # a long poll: back as soon as anything this member acts on changes
            self.watcher.poll = poll
            self.watcher.wait(min(LONG_POLL_SECONDS, max(poll, 10 * poll)))

    def step(self) -> None:
        config = self.config()
        if not self._warming:  # the kernels its verifications need, before the first upload
            self._warming = True
            primes = parameters(config).data_primes
            threading.Thread(target=warm, args=(primes,), name="warm-kernels", daemon=True).start()
        self.follow_rosters()
        epochs = self.epochs()
        self._keygen_step(config, epochs)
        if self.held_epochs():
            self._decryption_step(config)
        self._destroy_finished(config, epochs)

    def _keygen_step(self, config: FederationCreate, epochs: list[EpochOut]) -> None:
        """Take part in the newest epoch's DKG if its roster names this member, and finish
        the DKG of any live epoch it began but holds no key of yet (a later epoch may have
        started meanwhile, or the member restarted)."""
        live = {e.epoch for e in epochs if not e.retired}
        status = self.dkg_status()
        begun = set(self._epochs_with(DKG_SECRET)) - set(self.held_epochs()) - {status.epoch}
        for epoch in sorted(begun & live):
            keygen = self._committee_keygen(epoch)
            if keygen is not None:
                keygen.step(config, keygen.status())
        if status.epoch not in live or status.epoch in self.held_epochs():
            return
        keygen = self._committee_keygen(status.epoch)
        if keygen is not None:
            keygen.step(config, status)

    def _committee_keygen(self, epoch: int) -> MemberKeygen | None:
        """The DKG of ``epoch`` if the roster that governs it names this member (with this
        member's keys) and the member has not destroyed that epoch; else None."""
        governing = roster_for_epoch(_followed(self.rosters, self.roster), epoch)
        if governing is None or epoch in self.ledger().destroyed:
            return None
        mine = governing.roster.member(self.index)
        if mine is None or mine.signing_key != self.identity.public.signing_key.hex():
            return None  # not on this epoch's committee
        return self._keygen(epoch, governing.roster)

    def dkg_status(self) -> KeygenStatus:
        response = self.http.request("GET", paths.keygen(self.federation))
        return KeygenStatus.model_validate(response.json())

    def _destroy_finished(self, config: FederationCreate, epochs: list[EpochOut]) -> None:
        """Destroy the secrets of every epoch the server lists retired (or abandoned, its DKG
        unfinished) or whose τ this member's ledger shows spent: recorded in the ledger
        first, then overwritten."""
        tau = parameters(config).tau
        retired = {e.epoch for e in epochs if e.retired}
        on_disk = self._epochs_with(*SECRET_FILES)
        if not on_disk:
            return
        ledger = self.ledger()
        for epoch in on_disk:
            spent = epoch in self.held_epochs() and ledger.spent_in(epoch) >= tau
            if epoch in retired or spent:
                ledger = self._ledger.record_destroyed(epoch)
                destroy_epoch(epoch_dir(self.state_dir, epoch))
                self._secrets.pop(epoch, None)
                log.info(
                    "key epoch secrets destroyed",
                    extra={"member": self.index, "epoch": epoch},
                )

    def _decryption_step(self, config: FederationCreate) -> None:
        ledger = self.ledger()
        rounds = self.rounds()
        finished = [r.number for r in rounds if r.state.finished]
        new = [number for number in finished if number not in ledger.completed]
        if new:  # every finished round, touched or not, is never endorsed or decrypted again
            self._ledger.record_completed(*new)  # one write, and none while nothing is new
        for status in rounds:
            if status.state == RoundState.DECRYPTING:
                self._decrypting(config, status.number)
        live = {r.number for r in rounds if r.state in (RoundState.OPEN, RoundState.DECRYPTING)}
        done = set(self._presums) - live
        for number in done:
            del self._presums[number]  # published or aborted: the sum is no use any more
        if done:  # the round's fetched uploads and sums are freed: their pages go back
            release_free_memory()
        for status in rounds:
            if status.state == RoundState.OPEN and status.epoch in self.held_epochs():
                self._presum_step(config, status)

    def _presum_step(self, config: FederationCreate, status: RoundOut) -> None:
        """Verify and add the round's uploads that arrived since the last step, so that at
        the close this member holds their sum already (:mod:`keys.presum`). An upload that
        fails a check is skipped: the decryption request will list it and be refused."""
        presum = self._presums.get(status.number)
        if presum is not None and presum.epoch == status.epoch and not presum.unseen(status):
            return  # nothing new
        roster = self.roster_of(status.epoch)
        if roster is None:
            return
        params = parameters(config)
        if presum is None or presum.epoch != status.epoch:
            presum = self._presums[status.number] = Presum(params, status.number, status.epoch)
        records = TypeAdapter(list[UploadRecord]).validate_json(
            self.http.request("GET", paths.updates(self.federation, status.number)).content
        )
        keys = enrolled_keys(roster)
        proof_key = self.proof_key(params, status.epoch) if params.proofs else None
        for record in records:
            if record.client in presum.included or record.client in presum.refused:
                continue
            if record.client not in keys:
                presum.refused[record.client] = "not an enrolled client"
                continue
            try:
                upload = verified_upload(
                    record,
                    keys[record.client],
                    self.upload_blob(status.number, record.client),
                    params,
                    self.federation,
                    status.number,
                    status.epoch,
                    proof_key,
                    roster,
                )
                presum.add(record, upload)
            except (DecryptionRefused, EnvelopeError) as exc:
                presum.refused[record.client] = str(exc)  # not fetched again
                log.warning(
                    "upload not added in advance",
                    extra={"member": self.index, "round": status.number, "reason": str(exc)},
                )

    def _decrypting(self, config: FederationCreate, number: int) -> None:
        """Endorse the round's upload set; if named, decrypt once a quorum endorsed it."""
        request = self.decryption_request(number)
        if request.epoch not in self.held_epochs():
            return  # not on this epoch's committee, or its key is gone
        if self.endorse(config, request):
            request = self.decryption_request(number)  # now with this member's endorsement
        if request.state != RoundState.DECRYPTING or self.index not in request.decryption_set:
            return
        if (request.round, request.attempt) in self._sent:
            return
        roster = self.roster_of(request.epoch)
        if roster is None:
            return
        have = endorsers(request, roster, self.federation, epoch=request.epoch)
        needed = quorum(len(roster.members), roster.threshold)
        if len(have) < needed:
            self._once(
                request,
                "waiting for a quorum of endorsements",
                logging.INFO,
                endorsed=sorted(have),
                quorum=needed,
            )
            return
        self.handle(config, request)

    # ---- endorsement -------------------------------------------------------------------
    def endorse(self, config: FederationCreate, request: DecryptionRequest) -> bool:
        """Endorse the round's upload set if :func:`keys.verify.endorse` allows it and the
        server does not hold this endorsement yet: the ledger pins the round first, then
        the endorsement is PUT. True if it was PUT; a refusal is logged once."""
        mine = self._own_endorsement(request)
        if mine is not None and request.endorsements.get(self.index) == mine:
            return False  # pinned and delivered: nothing to check again
        roster = self.roster_of(request.epoch)
        if roster is None:
            self._once(request, "endorsement refused", logging.WARNING, reason="no roster")
            return False
        decision = endorse(
            request,
            config,
            self.ledger(),
            self.index,
            self.federation,
            epoch=request.epoch,
            roster=roster,
        )
        if decision.endorsement is None or decision.pin is None:
            self._once(request, "endorsement refused", logging.WARNING, reason=decision.reason)
            return False
        try:  # the round's upload set is on disk before the endorsement leaves
            self._ledger.record_endorsement(request.round, decision.pin, request.epoch)
        except DecryptionRefused as exc:
            self._once(request, "endorsement refused", logging.WARNING, reason=str(exc))
            return False
        signed = decision.endorsement.signed(self.identity.sign)
        if request.endorsements.get(self.index) == signed.to_bytes().decode():
            return False
        try:
            self.http.request(
                "PUT",
                paths.endorsement(self.federation, request.round, self.index),
                content=signed.to_bytes(),
            )
        except ServiceError as exc:
            self._once(request, "endorsement not taken", logging.WARNING, reason=str(exc))
            return False
        log.info("upload set endorsed", extra={"member": self.index, "round": request.round})
        return True

    def _own_endorsement(self, request: DecryptionRequest) -> str | None:
        """This member's endorsement of the listed set, if its ledger is pinned to that set."""
        pin = self.ledger().pin(request.round)
        listed = upload_set_digest(request.uploads)
        if pin is None or pin.uploads != listed:
            return None
        statement = Endorsement(
            self.federation, request.epoch, request.round, bytes.fromhex(listed), self.index
        )
        return statement.signed(self.identity.sign).to_bytes().decode()

    def _once(self, request: DecryptionRequest, event: str, level: int, **extra: object) -> None:
        """Log ``event`` for this (round, attempt) once, not on every poll."""
        key = (request.round, request.attempt, event + str(extra.get("reason", "")))
        if key in self._said:
            return
        self._said.add(key)
        fields = {"member": self.index, "round": request.round, "attempt": request.attempt}
        log.log(level, event, extra={**fields, **extra})

    # ---- decryption ------------------------------------------------------------------
    def decide(self, config: FederationCreate, request: DecryptionRequest) -> Decision:
        """:func:`keys.verify.verify` against this member's ledger, fetching uploads here."""
        roster = self.roster_of(request.epoch)
        if roster is None or request.epoch not in self.held_epochs():
            return Decision.refuse(f"this member holds no key of epoch {request.epoch}")
        params = parameters(config)
        return verify(
            request,
            config,
            self.ledger(),
            self.index,
            self.federation,
            functools.partial(self.upload_blob, request.round),
            epoch=request.epoch,
            roster=roster,
            proof_key=self.proof_key(params, request.epoch) if params.proofs else None,
            presum=self._presums.get(request.round),
        )

    def proof_key(self, params: ParameterSet, epoch: int) -> KeyRows:
        """The collective key of ``epoch`` that uploads' proofs are checked against: the one
        this member's own key statement of that epoch names (by digest), not the server's
        word."""
        if epoch not in self._proof_keys:
            path = epoch_dir(self.state_dir, epoch) / KEY_STATEMENT_FILE
            statement = KeyStatement.from_bytes(path.read_bytes())
            blob = self.http.request("GET", paths.public_key(self.federation, epoch)).content
            if key_digest(blob) != statement.public_key_digest:
                raise ProtocolError(
                    f"the server serves another key of epoch {epoch} than the one this "
                    "member signed"
                )
            public = PublicContext(params, ciphertext_from_bytes(blob))
            self._proof_keys[epoch] = key_rows(public)
        return self._proof_keys[epoch]

    def handle(self, config: FederationCreate, request: DecryptionRequest) -> bool:
        """Verify one decryption request and send the share; False (and a log line) if refused.

        The ledger is checked first, so a tampered one stops even a re-send."""
        number, attempt = request.round, request.attempt
        if (number, attempt) in self._sent:
            return True
        ledger = self.ledger()
        path = share_path(self.state_dir, number, attempt)
        if not path.exists() and not self._release(config, request, ledger, path):
            return False
        self.http.request(
            "PUT",
            paths.decryption_share(self.federation, number, attempt, self.index),
            content=path.read_bytes(),
        )
        self._sent.add((number, attempt))
        return True

    def _release(
        self, config: FederationCreate, request: DecryptionRequest, ledger: LedgerState, path: Path
    ) -> bool:
        """Put the share for ``path`` in place, counted first; False (logged) if refused.

        A ``.pending`` share the ledger records was stopped by a crash between recording and
        sending: it goes out as it is. One the ledger lacks never left, so it is remade."""
        pending = path.with_suffix(".pending")
        if (request.round, request.attempt) not in ledger.shares or not pending.exists():
            made = self._make_share(config, request)
            if made is None:
                return False
            blob, pin = made
            write_durably(pending, blob)
            try:  # τ and the round's upload set are on disk before the share leaves
                self._ledger.record_share(request.round, request.attempt, pin, request.epoch)
            except DecryptionRefused as exc:
                self._refused(request, str(exc))
                return False
        replace_durably(pending, path)
        return True

    def _make_share(
        self, config: FederationCreate, request: DecryptionRequest
    ) -> tuple[bytes, Pin] | None:
        """d_k for the verified aggregate and the round's pin, or None (logged) if refused."""
        decision = self.decide(config, request)
        if decision.aggregate is None or decision.digest is None or decision.pin is None:
            self._refused(request, decision.reason)
            return None
        params = parameters(config)
        try:
            share = decryption_share(
                self._member_secrets(params, request.epoch).threshold_share,
                decision.aggregate.words[:, 1],
                tuple(request.decryption_set),
                params,
                decision.digest,
                epoch=request.epoch,
            )
        except DecryptionRefused as exc:
            self._refused(request, str(exc))
            return None
        log.info(
            "decryption share made",
            extra={"member": self.index, "round": request.round, "attempt": request.attempt},
        )
        return share.to_bytes(params), decision.pin

    def _refused(self, request: DecryptionRequest, reason: str) -> None:
        log.warning(
            "decryption refused",
            extra={
                "member": self.index,
                "round": request.round,
                "attempt": request.attempt,
                "reason": reason,
            },
        )

    def _member_secrets(self, params: ParameterSet, epoch: int) -> MemberSecrets:
        if epoch not in self._secrets:
            path = epoch_dir(self.state_dir, epoch) / MEMBER_KEY
            self._secrets[epoch] = MemberSecrets.load(path, self.passphrase, params)
        return self._secrets[epoch]


def _followed(known: dict[bytes, SignedRoster], pinned: SignedRoster) -> list[SignedRoster]:
    """The known rosters up to the pinned one, oldest first (what governs an epoch)."""
    ordered = sorted(known.values(), key=lambda s: s.roster.version)
    return [s for s in ordered if s.roster.version <= pinned.roster.version]


def _canonical(config: FederationCreate) -> bytes:
    """The pinned form: the config's JSON with sorted keys (the format pins always had)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()


def _joined_before_endorsements(state_dir: Path) -> bool:
    """The member's DKG ran under code without endorsements: ``member.key`` but no key
    statement record, which :mod:`keys.dkg` writes since (:mod:`keys.ledger`, *Upgrade
    floor*)."""
    return (state_dir / MEMBER_KEY).exists() and not (state_dir / KEY_STATEMENT_FILE).exists()


def wait(condition: Callable[[], bool], timeout: float, poll: float = 0.2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()
