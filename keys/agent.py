"""The committee member agent: the loop that polls the aggregator over HTTP, joins the DKG
(:mod:`keys.dkg`), then decrypts only round aggregates that :func:`keys.verify.verify` accepts.

A refusal is logged with its reason. A share is counted in the ledger and stored (fsynced)
before it is sent, and re-sent byte for byte on a retry: recomputing it with fresh noise
would let the two be averaged.
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
from he_agg.api.models import DecryptionRequest, FederationCreate, FederationOut, RoundOut
from he_agg.api.states import RoundState
from he_agg.api.transport import SignedClient
from he_agg.errors import DecryptionRefused, HeAggError, ProtocolError, ServiceError
from he_agg.params import ParameterSet
from keys.decrypt import decryption_share
from keys.dkg import MEMBER_KEY, MemberKeygen
from keys.identity import Identity
from keys.ledger import Ledger, LedgerState, write_durably
from keys.member import MemberSecrets
from keys.verify import Decision, parameters, verify

__all__ = ["MemberAgent", "wait"]

log = logging.getLogger("he_agg.member")

_ROUNDS = TypeAdapter(list[RoundOut])


class MemberAgent:
    def __init__(
        self,
        client: SignedClient,
        federation: str,
        identity: Identity,
        state_dir: Path,
        passphrase: str,
    ) -> None:
        self.http = client
        self.federation = federation
        self.identity = identity
        self.state_dir = Path(state_dir)
        (self.state_dir / "shares").mkdir(parents=True, exist_ok=True)
        self.passphrase = passphrase
        self.dkg = MemberKeygen(client, federation, identity, self.state_dir, passphrase)
        self._ledger = Ledger(self.state_dir)
        self._secrets: MemberSecrets | None = None
        self._sent: set[tuple[int, int]] = set()  # delivered since start; re-sent after a restart

    @property
    def index(self) -> int:
        return self.identity.index

    # ---- what the aggregator serves ----------------------------------------------
    def config(self) -> FederationCreate:
        """The federation's configuration, pinned on first contact: later changes are refused."""
        pinned = self.state_dir / "federation.json"
        response = self.http.request("GET", paths.federation(self.federation))
        served = FederationOut.model_validate(response.json()).config
        if not pinned.exists():
            write_durably(pinned, _canonical(served))
            return served
        config = FederationCreate.model_validate_json(pinned.read_bytes())
        if _canonical(served) != _canonical(config):
            raise ProtocolError("the server's federation configuration changed since enrolment")
        return config

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
        return self._ledger.load()

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
            stop.wait(poll)

    def step(self) -> None:
        config = self.config()
        if not self.dkg.done:
            self.dkg.step(config)
            return
        self._decryption_step(config)

    def _decryption_step(self, config: FederationCreate) -> None:
        ledger = self._ledger.load()
        for status in self.rounds():
            number = status.number
            if status.state.finished and ledger.shared(number) and number not in ledger.completed:
                ledger = self._ledger.record_completed(number)  # re-reads: handle() may write
            if status.state == RoundState.DECRYPTING and self.index in status.decryption_set:
                self.handle(config, self.decryption_request(number))

    # ---- decryption ------------------------------------------------------------------
    def decide(self, config: FederationCreate, request: DecryptionRequest) -> Decision:
        """:func:`keys.verify.verify` against this member's ledger, fetching uploads here."""
        return verify(
            request,
            config,
            self._ledger.load(),
            self.index,
            self.federation,
            functools.partial(self.upload_blob, request.round),
        )

    def handle(self, config: FederationCreate, request: DecryptionRequest) -> bool:
        """Verify one decryption request and send the share; False (and a log line) if refused."""
        number, attempt = request.round, request.attempt
        if (number, attempt) in self._sent:
            return True
        path = self.state_dir / "shares" / f"{number}-{attempt}.bin"
        if not path.exists():
            blob = self._make_share(config, request)
            if blob is None:
                return False
            write_durably(path, blob)
        self._ledger.record_share(number, attempt)  # τ is counted before the share leaves
        self.http.request(
            "PUT",
            paths.decryption_share(self.federation, number, attempt, self.index),
            content=path.read_bytes(),
        )
        self._sent.add((number, attempt))
        return True

    def _make_share(self, config: FederationCreate, request: DecryptionRequest) -> bytes | None:
        """d_k for the verified aggregate, or None (logged) if this member refuses."""
        decision = self.decide(config, request)
        if decision.aggregate is None or decision.digest is None:
            self._refused(request, decision.reason)
            return None
        params = parameters(config)
        try:
            share = decryption_share(
                self._member_secrets(params).threshold_share,
                decision.aggregate.words[:, 1],
                tuple(request.decryption_set),
                params,
                decision.digest,
            )
        except DecryptionRefused as exc:
            self._refused(request, str(exc))
            return None
        log.info(
            "decryption share made",
            extra={"member": self.index, "round": request.round, "attempt": request.attempt},
        )
        return share.to_bytes(params)

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

    def _member_secrets(self, params: ParameterSet) -> MemberSecrets:
        if self._secrets is None:
            self._secrets = MemberSecrets.load(self.state_dir / MEMBER_KEY, self.passphrase, params)
        return self._secrets


def _canonical(config: FederationCreate) -> bytes:
    """The pinned form: the config's JSON with sorted keys (the format pins always had)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()


def wait(condition: Callable[[], bool], timeout: float, poll: float = 0.2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()
