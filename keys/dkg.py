"""One member's side of the distributed key generation, over the aggregator's REST API.

commit H(p_i) → reveal p_i → check the served key is Σ p_i and sign a statement saying so
(with the pinned roster's digest; clients require one from every member) → deal Shamir
shares of s_i → assemble S_k. Each step keeps what it made on disk and is safe to repeat
after a crash.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from he_agg.api import paths
from he_agg.api.models import FederationCreate, KeygenStatus
from he_agg.api.states import KeygenPhase
from he_agg.api.transport import SignedClient
from he_agg.crs import common_reference_polynomial
from he_agg.errors import ProtocolError
from he_agg.key_statement import KeyStatement, key_digest
from he_agg.params import ParameterSet
from he_agg.roster import Roster
from he_agg.seal_codec import ciphertext_to_bytes
from keys import keygen, shamir
from keys.identity import Identity, PublicIdentity
from keys.keystore import load_secret, save_secret
from keys.ledger import write_durably
from keys.member import MemberSecrets
from keys.verify import parameters

__all__ = ["MEMBER_KEY", "MemberKeygen", "committee"]

MEMBER_KEY = "member.key"  # written last: its presence means the member has joined

log = logging.getLogger("he_agg.member")


def committee(config: FederationCreate) -> list[PublicIdentity]:
    """The enrolled members' public identities, by index."""
    return [
        PublicIdentity(m.index, bytes.fromhex(m.signing_key), bytes.fromhex(m.encryption_key))
        for m in sorted(config.members, key=lambda m: m.index)
    ]


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
    ) -> None:
        self.roster = roster  # the pinned roster: its digest goes into the key statement
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
        response = self.http.request("GET", paths.keygen(self.federation))
        return KeygenStatus.model_validate(response.json())

    def step(self, config: FederationCreate) -> None:
        params = parameters(config)
        status = self.status()
        epoch = status.epoch
        secret = self._own_secret(params)
        own_share = self._own_public_share(params, secret)
        share = keygen.PublicKeyShare.from_bytes(own_share, params)
        if self.index not in status.commitments:
            commitment = keygen.commit(share, params, self.federation, epoch)
            self.http.request(
                "PUT",
                paths.commitment(self.federation, self.index),
                json_body={"commitment": commitment.hex()},
            )
            return
        if status.phase == KeygenPhase.COMMIT:
            return
        if self.index not in status.public_key_shares:
            path = paths.public_key_share(self.federation, self.index)
            self.http.request("PUT", path, content=own_share)
            return
        if status.phase == KeygenPhase.REVEAL:
            return
        members = committee(config)
        if self.index not in status.key_statements:
            served = self._check_public_key(members, params, status.commitments, epoch)
            self._sign_key(served, epoch)
        dealt = set(status.shamir_shares)
        if any((self.index, m.index) not in dealt for m in members):
            self._deal(config.threshold, params, secret, members, epoch)
            return
        if status.phase != KeygenPhase.READY:
            return
        self._assemble(params, secret, members, epoch)

    def _own_secret(self, params: ParameterSet) -> keygen.SecretShare:
        """s_i, sampled once and kept encrypted under the passphrase."""
        path = self.state_dir / "dkg-secret.key"
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

    def _check_public_key(
        self,
        members: list[PublicIdentity],
        params: ParameterSet,
        commitments: dict[int, str],
        epoch: int,
    ) -> bytes:
        """Every revealed share matches its commitment, and the served key is their sum."""
        shares = []
        for member in members:
            path = paths.public_key_share(self.federation, member.index)
            blob = self.http.request("GET", path).content
            share = keygen.PublicKeyShare.from_bytes(blob, params)
            keygen.verify_reveal(
                bytes.fromhex(commitments[member.index]), share, params, self.federation, epoch
            )
            shares.append(share)
        crs = common_reference_polynomial(params, self.federation)
        expected = keygen.public_key(
            keygen.aggregate_public_key_shares(shares, params), crs, params
        )
        served = self.http.request("GET", paths.public_key(self.federation)).content
        if served != ciphertext_to_bytes(expected):
            raise ProtocolError("the served public key is not the sum of the revealed shares")
        return served

    def _sign_key(self, served: bytes, epoch: int) -> None:
        """Vouch for the key just checked, under the pinned roster (what clients verify)."""
        if self.roster is None:
            raise ProtocolError("no pinned roster: a member signs the key only under one")
        statement = KeyStatement(
            self.federation, epoch, self.index, self.roster.digest, key_digest(served)
        ).signed(self.identity.sign)
        path = paths.key_statement(self.federation, self.index)
        self.http.request("PUT", path, content=statement.to_bytes())

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
            path = paths.shamir_share(self.federation, sender.index, self.index)
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
