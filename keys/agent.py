"""The committee member agent: joins the DKG, then decrypts only verified round aggregates.

It polls the aggregator. Before it sends a decryption share it checks, and logs why
when it refuses:
  * the round is decrypting and this member is in the named set;
  * at least K_min distinct enrolled clients are listed;
  * every listed upload carries a valid signature of its enrolled client;
  * the aggregate equals the sum of the listed uploads, recomputed here;
  * the round was not decrypted before, and the budget τ is not spent.
A share is stored (fsynced) before it is sent and re-sent byte for byte on a retry:
recomputing it with fresh noise would let the two be averaged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from he_agg.aggregate import aggregate_envelope
from he_agg.api.transport import SignedClient
from he_agg.crs import common_reference_polynomial
from he_agg.envelope import Upload, decode_upload
from he_agg.errors import DecryptionRefused, HeAggError, ProtocolError, ServiceError
from he_agg.params import ParameterSet
from he_agg.request_signing import SignedRequest, verify_signature
from he_agg.seal_codec import ciphertext_to_bytes
from keys import keygen, shamir
from keys.decrypt import decryption_share
from keys.identity import Identity, PublicIdentity
from keys.keystore import load_secret, save_secret
from keys.member import MemberSecrets

__all__ = ["MemberAgent", "wait"]

log = logging.getLogger("he_agg.member")


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


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
        (self.state_dir / "dealt").mkdir(exist_ok=True)
        self.passphrase = passphrase
        self._secrets: MemberSecrets | None = None
        self._sent: set[tuple[int, int]] = set()  # delivered since start; re-sent after a restart

    # ---- plumbing ---------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"/v1/federations/{self.federation}"

    @property
    def index(self) -> int:
        return self.identity.index

    def _get(self, path: str) -> Any:
        return self.http.request("GET", self.base + path).json()

    def config(self) -> dict[str, Any]:
        """The federation's configuration, pinned on first contact: later changes are refused."""
        pinned = self.state_dir / "federation.json"
        served = self._get("")["config"]
        if not pinned.exists():
            _write_durably(pinned, json.dumps(served, sort_keys=True).encode())
            return dict(served)
        config = dict(json.loads(pinned.read_text()))
        if json.dumps(served, sort_keys=True) != json.dumps(config, sort_keys=True):
            raise ProtocolError("the server's federation configuration changed since enrolment")
        return config

    def params(self, config: dict[str, Any]) -> ParameterSet:
        return ParameterSet.from_dict(config["parameters"])

    def ledger(self) -> dict[str, Any]:
        path = self.state_dir / "ledger.json"
        if not path.exists():
            return {"shares": [], "completed": []}
        return dict(json.loads(path.read_text()))

    def _save_ledger(self, ledger: dict[str, Any]) -> None:
        _write_durably(self.state_dir / "ledger.json", json.dumps(ledger).encode())

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
        if not (self.state_dir / "member.key").exists():
            self._keygen_step(config)
            return
        self._decryption_step(config)

    # ---- key generation ----------------------------------------------------------
    def _own_secret(self, params: ParameterSet) -> keygen.SecretShare:
        path = self.state_dir / "dkg-secret.key"
        if path.exists():
            raw = load_secret(path, self.passphrase)
            return keygen.SecretShare(self.index, np.frombuffer(raw, dtype=np.int8).copy())
        secret = keygen.gen_secret_share(params, self.index)
        save_secret(path, secret.coeffs.tobytes(), self.passphrase)
        return secret

    def _own_public_share(self, params: ParameterSet, secret: keygen.SecretShare) -> bytes:
        path = self.state_dir / "pk-share.bin"
        if not path.exists():
            crs = common_reference_polynomial(params, self.federation)
            share = keygen.gen_public_key_share(secret, crs, params)
            _write_durably(path, share.to_bytes(params))
        return path.read_bytes()

    def _members(self, config: dict[str, Any]) -> list[PublicIdentity]:
        return [
            PublicIdentity(
                int(m["index"]), bytes.fromhex(m["signing_key"]), bytes.fromhex(m["encryption_key"])
            )
            for m in sorted(config["members"], key=lambda m: int(m["index"]))
        ]

    def _keygen_step(self, config: dict[str, Any]) -> None:
        params = self.params(config)
        status = self._get("/keygen")
        epoch = int(status["epoch"])
        secret = self._own_secret(params)
        own_share = self._own_public_share(params, secret)
        share = keygen.PublicKeyShare.from_bytes(own_share, params)
        commitment = keygen.commit(share, params, self.federation, epoch)
        commitments = {int(k): v for k, v in status["commitments"].items()}
        if self.index not in commitments:
            self.http.request(
                "PUT",
                f"{self.base}/keygen/commitments/{self.index}",
                json_body={"commitment": commitment.hex()},
            )
            return
        if status["phase"] == "commit":
            return
        if self.index not in status["public_key_shares"]:
            self.http.request(
                "PUT", f"{self.base}/keygen/public-key-shares/{self.index}", content=own_share
            )
            return
        if status["phase"] == "reveal":
            return
        members = self._members(config)
        dealt = {(int(s), int(r)) for s, r in status["shamir_shares"]}
        if any((self.index, m.index) not in dealt for m in members):
            self._check_public_key(config, params, commitments, epoch)
            self._deal(config, params, secret, members, epoch)
            return
        if status["phase"] != "ready":
            return
        self._assemble(params, secret, members, epoch)

    def _check_public_key(
        self, config: dict[str, Any], params: ParameterSet, commitments: dict[int, str], epoch: int
    ) -> None:
        """Every revealed share matches its commitment, and the served key is their sum."""
        shares = []
        for member in self._members(config):
            blob = self.http.request(
                "GET", f"{self.base}/keygen/public-key-shares/{member.index}"
            ).content
            share = keygen.PublicKeyShare.from_bytes(blob, params)
            keygen.verify_reveal(
                bytes.fromhex(commitments[member.index]), share, params, self.federation, epoch
            )
            shares.append(share)
        crs = common_reference_polynomial(params, self.federation)
        expected = keygen.public_key(
            keygen.aggregate_public_key_shares(shares, params), crs, params
        )
        served = self.http.request("GET", f"{self.base}/public-key").content
        if served != ciphertext_to_bytes(expected):
            raise ProtocolError("the served public key is not the sum of the revealed shares")

    def _deal(
        self,
        config: dict[str, Any],
        params: ParameterSet,
        secret: keygen.SecretShare,
        members: list[PublicIdentity],
        epoch: int,
    ) -> None:
        folder = self.state_dir / "dealt"
        if not all((folder / f"{m.index}.bin").exists() for m in members):
            threshold = int(config["threshold"])
            for message in shamir.deal_shares(
                secret, params, threshold, members, self.identity, self.federation, epoch
            ):
                _write_durably(folder / f"{message.recipient}.bin", message.to_bytes())
        for member in members:
            self.http.request(
                "PUT",
                f"{self.base}/keygen/shamir-shares/{self.index}/{member.index}",
                content=(folder / f"{member.index}.bin").read_bytes(),
            )

    def _assemble(
        self,
        params: ParameterSet,
        secret: keygen.SecretShare,
        members: list[PublicIdentity],
        epoch: int,
    ) -> None:
        points = []
        for sender in members:
            blob = self.http.request(
                "GET", f"{self.base}/keygen/shamir-shares/{sender.index}/{self.index}"
            ).content
            message = shamir.EncryptedShare.from_bytes(blob)
            points.append(
                shamir.open_share(message, self.identity, sender, params, self.federation, epoch)
            )
        threshold_share = shamir.assemble_threshold_share(self.index, points, params)
        MemberSecrets(self.identity, secret, threshold_share).save(
            self.state_dir / "member.key", self.passphrase, params
        )
        log.info(
            "member joined the committee",
            extra={"member": self.index, "federation": self.federation},
        )

    # ---- decryption ------------------------------------------------------------------
    def secrets(self, params: ParameterSet) -> MemberSecrets:
        if self._secrets is None:
            self._secrets = MemberSecrets.load(
                self.state_dir / "member.key", self.passphrase, params
            )
        return self._secrets

    def _decryption_step(self, config: dict[str, Any]) -> None:
        ledger = self.ledger()
        for status in self._get("/rounds"):
            number = int(status["number"])
            shared = any(r == number for r, _ in ledger["shares"])
            if (
                status["state"] in ("published", "aborted")
                and shared
                and number not in ledger["completed"]
            ):
                ledger["completed"].append(number)
                self._save_ledger(ledger)
            if status["state"] == "decrypting" and self.index in status["decryption_set"]:
                request = self._get(f"/rounds/{number}/decryption")
                self.handle(config, request)

    def handle(self, config: dict[str, Any], request: dict[str, Any]) -> bool:
        """Verify one decryption request and send the share; False (and a log line) if refused."""
        number, attempt = int(request["round"]), int(request["attempt"])
        path = self.state_dir / "shares" / f"{number}-{attempt}.bin"
        if (number, attempt) in self._sent:
            return True
        if not path.exists():
            try:
                blob = self._compute_share(config, request)
            except DecryptionRefused as exc:
                log.warning(
                    "decryption refused",
                    extra={
                        "member": self.index,
                        "round": number,
                        "attempt": attempt,
                        "reason": str(exc),
                    },
                )
                return False
            _write_durably(path, blob)
            ledger = self.ledger()
            ledger["shares"].append([number, attempt])
            self._save_ledger(ledger)
        self.http.request(
            "PUT",
            f"{self.base}/rounds/{number}/decryption/{attempt}/shares/{self.index}",
            content=path.read_bytes(),
        )
        self._sent.add((number, attempt))
        return True

    def _compute_share(self, config: dict[str, Any], request: dict[str, Any]) -> bytes:
        params = self.params(config)
        aggregate, digest = self.verify(config, request)
        share = decryption_share(
            self.secrets(params).threshold_share,
            aggregate.words[:, 1],
            tuple(request["decryption_set"]),
            params,
            digest,
        )
        log.info(
            "decryption share made",
            extra={"member": self.index, "round": request["round"], "attempt": request["attempt"]},
        )
        return share.to_bytes(params)

    def verify(self, config: dict[str, Any], request: dict[str, Any]) -> tuple[Upload, bytes]:
        """Every check of the module docstring; returns the recomputed aggregate and digest."""
        params = self.params(config)
        number, attempt = int(request["round"]), int(request["attempt"])
        if request["state"] != "decrypting" or self.index not in request["decryption_set"]:
            raise DecryptionRefused("the round is not asking this member to decrypt")
        named = list(request["decryption_set"])
        members = {int(m["index"]) for m in config["members"]}
        if len(set(named)) != int(config["threshold"]) or not set(named) <= members:
            raise DecryptionRefused(
                f"the decryption set {named} is not t={config['threshold']} "
                "distinct enrolled members"
            )
        ledger = self.ledger()
        if number in ledger["completed"]:
            raise DecryptionRefused(f"round {number} was already decrypted")
        if any(r == number and a >= attempt for r, a in ledger["shares"]):
            raise DecryptionRefused(f"round {number} attempt {attempt} is not a new attempt")
        if len(ledger["shares"]) >= params.tau:
            raise DecryptionRefused(f"decryption budget τ={params.tau} is spent")
        enrolled = {c["name"]: bytes.fromhex(c["signing_key"]) for c in config["clients"]}
        uploads = request["uploads"]
        names = [u["client"] for u in uploads]
        if len(set(names)) != len(names) or not set(names) <= set(enrolled):
            raise DecryptionRefused("the upload list has duplicates or clients not enrolled")
        if len(names) < int(config["k_min"]):
            raise DecryptionRefused(f"only {len(names)} clients, K_min is {config['k_min']}")

        def checked() -> Iterator[Upload]:
            for upload in uploads:
                blob = self._upload_blob(number, upload["client"])
                self._check_upload(enrolled[upload["client"]], number, upload, blob)
                yield decode_upload(
                    blob, params, federation=self.federation, round=number, client=upload["client"]
                )

        envelope = aggregate_envelope(checked(), params, self.federation, number)
        digest = hashlib.sha256(envelope).digest()
        if digest.hex() != request["aggregate_sha256"]:
            raise DecryptionRefused("the aggregate is not the sum of the listed uploads")
        return decode_upload(envelope, params), digest

    def _upload_blob(self, number: int, client: str) -> bytes:
        return self.http.request("GET", f"{self.base}/rounds/{number}/updates/{client}").content

    def _check_upload(self, key: bytes, number: int, upload: dict[str, Any], blob: bytes) -> None:
        digest = hashlib.sha256(blob).hexdigest()
        target = f"{self.base}/rounds/{number}/updates/{upload['client']}"
        if digest != upload["sha256"] or upload["target"] != target:
            raise DecryptionRefused(f"upload of {upload['client']!r} does not match its record")
        signed = SignedRequest(
            "PUT", target, digest, int(upload["timestamp"]), upload["nonce"], upload["manifest"]
        )
        try:
            verify_signature(key, bytes.fromhex(upload["signature"]), signed.canonical())
        except (ProtocolError, ValueError) as exc:
            raise DecryptionRefused(f"upload of {upload['client']!r} is not signed by it") from exc


def wait(condition: Callable[[], bool], timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()
