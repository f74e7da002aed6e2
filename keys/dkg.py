"""One member's side of the distributed key generation, over the aggregator's REST API.

commit H(p_i) → reveal p_i → check the served key is Σ p_i and sign a statement saying so
(with the pinned roster's digest; clients require one from every member) → deal Shamir
shares of s_i → assemble S_k. Each step keeps what it made on disk and is safe to repeat
after a crash.

One :class:`MemberKeygen` runs one key epoch, under the roster that governs it, in that
epoch's own folder (:func:`epoch_dir`: the state folder itself for epoch 0, as before
epochs existed, and ``epochs/{e}/`` after). :func:`destroy_epoch` overwrites and removes an
epoch's secrets once the epoch is over.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from he_agg.api import paths
from he_agg.api.models import FederationCreate, KeygenStatus
from he_agg.api.states import KeygenPhase
from he_agg.api.transport import SignedClient
from he_agg.collective_key import commitment_message
from he_agg.crs import common_reference_polynomial
from he_agg.errors import ProtocolError
from he_agg.key_statement import KeyStatement, key_digest
from he_agg.params import ParameterSet
from he_agg.roster import Roster
from he_agg.seal_codec import ciphertext_to_bytes
from keys import keygen, shamir
from keys.commitments import check_commitments, split_commitment
from keys.identity import Identity, PublicIdentity
from keys.keystore import load_secret, save_secret
from keys.ledger import write_durably
from keys.member import MemberSecrets
from keys.verify import parameters

__all__ = [
    "COMMITMENTS_FILE",
    "DKG_SECRET",
    "KEY_STATEMENT_FILE",
    "MEMBER_KEY",
    "SECRET_FILES",
    "MemberKeygen",
    "committee",
    "destroy_epoch",
    "epoch_dir",
]

MEMBER_KEY = "member.key"  # written last: its presence means the member has joined
COMMITMENTS_FILE = "commitments.json"  # all n signed commitments, pinned before the reveal
KEY_STATEMENT_FILE = "key-statement.json"  # the one key statement this member signed
DKG_SECRET = "dkg-secret.key"  # s_i, encrypted under the passphrase
SECRET_FILES = (MEMBER_KEY, DKG_SECRET)  # with dealt/*: what destroy_epoch removes

log = logging.getLogger("he_agg.member")


def committee(roster: Roster) -> list[PublicIdentity]:
    """The roster's members' public identities, by index."""
    return [
        PublicIdentity(m.index, bytes.fromhex(m.signing_key), bytes.fromhex(m.encryption_key))
        for m in sorted(roster.members, key=lambda m: m.index)
    ]


def epoch_dir(state_dir: Path, epoch: int) -> Path:
    """Where a member keeps one key epoch's DKG state and key."""
    return Path(state_dir) if epoch == 0 else Path(state_dir) / "epochs" / str(epoch)


def destroy_epoch(folder: Path) -> bool:
    """Overwrite and remove an epoch's secret files (s_i, the member key, the dealt Shamir
    shares); True if anything was there. Public files (commitments, key statement) stay.

    Overwriting first is best effort: on copy-on-write or journalling file systems the
    old blocks may survive; the passphrase encryption of every secret file is what holds
    there."""
    found = False
    dealt = folder / "dealt"
    victims = [folder / name for name in SECRET_FILES]
    victims += sorted(dealt.glob("*.bin")) if dealt.is_dir() else []
    for path in victims:
        if not path.exists():
            continue
        found = True
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.write(os.urandom(size))
            handle.flush()
            os.fsync(handle.fileno())
        path.unlink()
    return found


class MemberKeygen:
    """The DKG steps of one member; :meth:`step` does the next thing the keygen waits for."""

    def __init__(
        self,
        client: SignedClient,
        federation: str,
        identity: Identity,
        state_dir: Path,
        passphrase: str,
        roster: Roster | None = None,
        epoch: int | None = None,
    ) -> None:
        self.roster = roster  # the governing roster: its digest goes into the key statement
        self.epoch = (roster.epoch if roster else 0) if epoch is None else epoch
        self.http = client
        self.federation = federation
        self.identity = identity
        self.state_dir = Path(state_dir)
        self.passphrase = passphrase
        (self.state_dir / "dealt").mkdir(parents=True, exist_ok=True)

    @property
    def index(self) -> int:
        return self.identity.index

    @property
    def done(self) -> bool:
        return (self.state_dir / MEMBER_KEY).exists()

    def status(self) -> KeygenStatus:
        response = self.http.request("GET", paths.keygen(self.federation, self.epoch))
        return KeygenStatus.model_validate(response.json())

    def step(self, config: FederationCreate, status: KeygenStatus | None = None) -> None:
        roster = self._pinned_roster()
        params = parameters(config)
        status = status or self.status()
        epoch = self.epoch  # the epoch this member chose to run, never the server's word
        if status.epoch != epoch:
            raise ProtocolError(
                f"the server runs key generation for epoch {status.epoch}; "
                f"this member is generating keys for epoch {epoch}"
            )
        secret = self._own_secret(params)
        own_share = self._own_public_share(params, secret)
        share = keygen.PublicKeyShare.from_bytes(own_share, params)
        own_commitment = keygen.commit(share, params, self.federation, epoch)
        if self.index not in status.commitments:
            self._post_commitment(own_commitment, roster, epoch)
            return
        if status.phase == KeygenPhase.COMMIT:
            return
        commitments = self._pin_commitments(status, roster, epoch, own_commitment)
        if self.index not in status.public_key_shares:
            path = paths.public_key_share(self.federation, self.index)
            self.http.request("PUT", path, content=own_share)
            return
        if status.phase == KeygenPhase.REVEAL:
            return
        members = committee(roster)
        if self.index not in status.key_statements:
            self._vouch_for_key(members, params, commitments, epoch, own_share)
        dealt = set(status.shamir_shares)
        if any((self.index, m.index) not in dealt for m in members):
            self._deal(roster.threshold, params, secret, members, epoch)
            return
        if status.phase != KeygenPhase.READY:
            return
        self._assemble(params, secret, members, epoch)

    def _own_secret(self, params: ParameterSet) -> keygen.SecretShare:
        """s_i, sampled once and kept encrypted under the passphrase."""
        path = self.state_dir / DKG_SECRET
        if path.exists():
            raw = load_secret(path, self.passphrase)
            return keygen.SecretShare(self.index, np.frombuffer(raw, dtype=np.int8).copy())
        secret = keygen.gen_secret_share(params, self.index)
        save_secret(path, secret.coeffs.tobytes(), self.passphrase)
        return secret

    def _own_public_share(self, params: ParameterSet, secret: keygen.SecretShare) -> bytes:
        """p_i = −a·s_i + e_i, made once and kept: the posted commitment H(p_i) binds it."""
        path = self.state_dir / "pk-share.bin"
        if not path.exists():
            crs = common_reference_polynomial(params, self.federation)
            share = keygen.gen_public_key_share(secret, crs, params)
            write_durably(path, share.to_bytes(params))
        return path.read_bytes()

    def _pinned_roster(self) -> Roster:
        if self.roster is None:
            raise ProtocolError("no pinned roster: a member takes part in a DKG only under one")
        return self.roster

    def _post_commitment(self, commitment: bytes, roster: Roster, epoch: int) -> None:
        """H(p_i), signed: no one else can post a commitment in this member's name."""
        message = commitment_message(self.federation, epoch, self.index, roster.digest, commitment)
        body = {"commitment": commitment.hex(), "signature": self.identity.sign(message).hex()}
        self.http.request("PUT", paths.commitment(self.federation, self.index), json_body=body)

    def _pin_commitments(
        self, status: KeygenStatus, roster: Roster, epoch: int, own: bytes
    ) -> dict[int, bytes]:
        """All n signed commitments, checked and kept before this member reveals anything;
        afterwards the server may only ever show the same ones."""
        path = self.state_dir / COMMITMENTS_FILE
        if path.exists():
            pinned: dict[str, str] = json.loads(path.read_text())
            if {str(k): v for k, v in status.commitments.items()} != pinned:
                raise ProtocolError("the server changed the commitments after they were pinned")
            return {int(k): split_commitment(v)[0] for k, v in pinned.items()}
        checked = check_commitments(
            status.commitments, roster, self.federation, epoch, own, self.index
        )
        body = json.dumps({str(k): v for k, v in status.commitments.items()}, sort_keys=True)
        write_durably(path, body.encode())
        return checked

    def _vouch_for_key(
        self,
        members: list[PublicIdentity],
        params: ParameterSet,
        commitments: dict[int, bytes],
        epoch: int,
        own_share: bytes,
    ) -> None:
        """Sign the key statement once per epoch (kept on disk); later only re-send it, and
        never for another key than the one signed."""
        roster = self._pinned_roster()
        path = self.state_dir / KEY_STATEMENT_FILE
        if path.exists():
            statement = KeyStatement.from_bytes(path.read_bytes())
            served = self.http.request("GET", paths.public_key(self.federation, epoch)).content
            if statement.public_key_digest != key_digest(served):
                raise ProtocolError("the server serves another key than the one this member signed")
        else:
            served = self._check_public_key(members, params, commitments, epoch, own_share)
            statement = KeyStatement(
                self.federation, epoch, self.index, roster.digest, key_digest(served)
            ).signed(self.identity.sign)
            write_durably(path, statement.to_bytes())
        path_out = paths.key_statement(self.federation, self.index)
        self.http.request("PUT", path_out, content=statement.to_bytes())

    def _check_public_key(
        self,
        members: list[PublicIdentity],
        params: ParameterSet,
        commitments: dict[int, bytes],
        epoch: int,
        own_share: bytes,
    ) -> bytes:
        """Every revealed share is its member's and matches the pinned commitment (this
        member's own is the one it made), and the served key is their sum."""
        shares = []
        for member in members:
            path = paths.public_key_share(self.federation, member.index, epoch)
            blob = self.http.request("GET", path).content
            if member.index == self.index and blob != own_share:
                raise ProtocolError("the server relays another share as this member's own")
            share = keygen.PublicKeyShare.from_bytes(blob, params)
            if share.member != member.index:
                raise ProtocolError(f"the share relayed for member {member.index} is another's")
            keygen.verify_reveal(commitments[member.index], share, params, self.federation, epoch)
            shares.append(share)
        crs = common_reference_polynomial(params, self.federation)
        expected = keygen.public_key(
            keygen.aggregate_public_key_shares(shares, params), crs, params
        )
        served = self.http.request("GET", paths.public_key(self.federation, epoch)).content
        if served != ciphertext_to_bytes(expected):
            raise ProtocolError("the served public key is not the sum of the revealed shares")
        return served

    def _deal(
        self,
        threshold: int,
        params: ParameterSet,
        secret: keygen.SecretShare,
        members: list[PublicIdentity],
        epoch: int,
    ) -> None:
        """Shamir-share s_i to every member, once; re-sending sends the same sealed bytes."""
        folder = self.state_dir / "dealt"
        if not all((folder / f"{m.index}.bin").exists() for m in members):
            for message in shamir.deal_shares(
                secret, params, threshold, members, self.identity, self.federation, epoch
            ):
                write_durably(folder / f"{message.recipient}.bin", message.to_bytes())
        for member in members:
            self.http.request(
                "PUT",
                paths.shamir_share(self.federation, self.index, member.index),
                content=(folder / f"{member.index}.bin").read_bytes(),
            )

    def _assemble(
        self,
        params: ParameterSet,
        secret: keygen.SecretShare,
        members: list[PublicIdentity],
        epoch: int,
    ) -> None:
        """S_k = Σ_i share_{i→k}, opened from every sender, then saved as the member key."""
        points = []
        for sender in members:
            path = paths.shamir_share(self.federation, sender.index, self.index, epoch)
            message = shamir.EncryptedShare.from_bytes(self.http.request("GET", path).content)
            points.append(
                shamir.open_share(message, self.identity, sender, params, self.federation, epoch)
            )
        threshold_share = shamir.assemble_threshold_share(self.index, points, params)
        MemberSecrets(self.identity, secret, threshold_share).save(
            self.state_dir / MEMBER_KEY, self.passphrase, params
        )
        log.info(
            "member joined the committee",
            extra={"member": self.index, "federation": self.federation},
        )
