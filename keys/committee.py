"""Run the whole committee setup in one process, in protocol order.

Used by the demo, the benchmarks and the end-to-end test; the service (a later issue)
runs the same steps across machines. Every message that would cross the network goes
through its ``to_bytes``/``from_bytes`` here too, and the ``relayed`` list records
exactly the bytes an aggregator would see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from he_agg.crs import common_reference_polynomial
from he_agg.modarith import U64Array
from he_agg.params import ParameterSet
from he_agg.public import PublicContext
from keys import keygen, shamir
from keys.identity import Identity
from keys.member import MemberSecrets

__all__ = ["CommitteeSetup", "run_committee_setup"]


@dataclass(frozen=True)
class CommitteeSetup:
    params: ParameterSet
    federation: str
    epoch: int
    threshold: int
    crs: U64Array
    public: PublicContext
    members: tuple[MemberSecrets, ...]
    relayed: list[bytes] = field(default_factory=list, compare=False)


def run_committee_setup(
    params: ParameterSet, federation: str, members: int, threshold: int, epoch: int = 0
) -> CommitteeSetup:
    """DKG with commit-then-reveal, then t-of-n dealing, opening and assembly."""
    relayed: list[bytes] = []
    crs = common_reference_polynomial(params, federation)
    identities = [Identity.generate(index) for index in range(1, members + 1)]
    publics = [identity.public for identity in identities]
    secrets = [keygen.gen_secret_share(params, identity.index) for identity in identities]

    shares = [keygen.gen_public_key_share(secret, crs, params) for secret in secrets]
    commitments = [keygen.commit(share, params, federation, epoch) for share in shares]
    relayed.extend(commitments)  # round 1: every commitment is in before any reveal
    revealed = []
    for share, commitment in zip(shares, commitments, strict=True):
        wire = share.to_bytes(params)
        relayed.append(wire)
        received = keygen.PublicKeyShare.from_bytes(wire, params)
        keygen.verify_reveal(commitment, received, params, federation, epoch)
        revealed.append(received)
    aggregate = keygen.aggregate_public_key_shares(revealed, params)
    public = PublicContext(params, keygen.public_key(aggregate, crs, params))

    inbox: dict[int, list[shamir.EncryptedShare]] = {p.index: [] for p in publics}
    for identity, secret in zip(identities, secrets, strict=True):
        for message in shamir.deal_shares(
            secret, params, threshold, publics, identity, federation, epoch
        ):
            wire = message.to_bytes()
            relayed.append(wire)
            inbox[message.recipient].append(shamir.EncryptedShare.from_bytes(wire))
    member_secrets = []
    for identity, secret in zip(identities, secrets, strict=True):
        points = [
            shamir.open_share(m, identity, publics[m.sender - 1], params, federation, epoch)
            for m in inbox[identity.index]
        ]
        threshold_share = shamir.assemble_threshold_share(identity.index, points, params)
        member_secrets.append(MemberSecrets(identity, secret, threshold_share))
    return CommitteeSetup(
        params, federation, epoch, threshold, crs, public, tuple(member_secrets), relayed
    )
