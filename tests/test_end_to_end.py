"""Every party in one process, in protocol order (DESIGN §3): committee DKG and dealing,
ten clients with a CNN of ≥ 400k parameters, aggregation from wire bytes, threshold
decryption by every 3-of-5 subset."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pytest
import tenseal.sealapi as sealapi
import torch
from torch import nn

from clients.upload import prepare_upload
from he_agg.aggregate import aggregate_uploads
from he_agg.combine import DecryptionShare, combine
from he_agg.encoding import decode_aggregate
from he_agg.errors import DecryptionRefused
from he_agg.packing import Manifest, flatten, unflatten, weighted_average
from he_agg.params import ParameterSet
from he_agg.seal_codec import SealCiphertext, ciphertext_to_bytes, plaintext_from_bytes
from he_agg.seal_context import save_bytes
from keys.committee import CommitteeSetup, run_committee_setup
from keys.decrypt import decryption_share
from keys.keygen import key_primes
from tests.helpers import summed_secret_key

FEDERATION, ROUND, MEMBERS, THRESHOLD, CLIENTS = "e2e-federation", 1, 5, 3, 10


class Cnn(nn.Module):
    """A small MNIST-style CNN with BatchNorm (so integer buffers are in the state_dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 5), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64)
        self.fc1, self.fc2 = nn.Linear(64 * 4 * 4, 384), nn.Linear(384, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@dataclass
class Round:
    setup: CommitteeSetup
    blobs: list[bytes]
    manifest: Manifest
    truth: np.ndarray
    total_weight: float
    aggregate: np.ndarray
    digest: bytes
    states: list[dict[str, torch.Tensor]]


def _client_states() -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    torch.manual_seed(0)
    base = Cnn()
    rng = np.random.default_rng(0)
    states, samples = [], []
    for client in range(CLIENTS):
        model = Cnn()
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        model.train()
        for _ in range(3):  # moves BatchNorm running stats; num_batches_tracked becomes 3
            model(torch.randn(4, 1, 28, 28) + client * 0.1)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        samples.append(int(rng.integers(50, 150)))
    return states, samples


@pytest.fixture(scope="module")
def federated_round(e2e_params: ParameterSet) -> Round:
    setup = run_committee_setup(e2e_params, FEDERATION, MEMBERS, THRESHOLD)
    states, samples = _client_states()
    blobs = []
    for index, (state, count) in enumerate(zip(states, samples, strict=True)):
        blob, manifest = prepare_upload(
            state, count, setup.public, federation=FEDERATION, round=ROUND, client=f"bank-{index}"
        )
        blobs.append(blob)
    assert manifest.size >= 400_000
    vectors = np.stack([flatten(state)[0] for state in states])
    truth = np.average(vectors, axis=0, weights=np.array(samples, dtype=np.float64))
    aggregate = aggregate_uploads(blobs, e2e_params, federation=FEDERATION, round=ROUND)
    digest = hashlib.sha256(aggregate.tobytes()).digest()
    return Round(setup, blobs, manifest, truth, float(sum(samples)), aggregate, digest, states)


def _decrypt(r: Round, subset: tuple[int, ...]) -> tuple[np.ndarray, list[DecryptionShare]]:
    params = r.setup.params
    shares = [
        decryption_share(
            r.setup.members[k - 1].threshold_share, r.aggregate[:, 1], subset, params, r.digest
        )
        for k in subset
    ]
    # shares cross the network as bytes
    received = [DecryptionShare.from_bytes(s.to_bytes(params), params) for s in shares]
    decoded = decode_aggregate(combine(r.aggregate[:, 0], received, params), r.setup.public.seal)
    return weighted_average(decoded, r.manifest.size), shares


def _average_bound(r: Round) -> float:
    """The derived bound on the weighted sum, carried through the division by Σ n_k."""
    bound = r.setup.params.error_bound(THRESHOLD)
    return bound * (1 + np.abs(r.truth).max()) / (r.total_weight - bound)


def test_every_three_member_subset_decrypts_the_weighted_average(federated_round: Round) -> None:
    r = federated_round
    bound = _average_bound(r)
    assert bound < 1e-5  # the bound itself is meaningful for model weights
    for subset in combinations(range(1, MEMBERS + 1), THRESHOLD):
        average, _ = _decrypt(r, subset)
        assert np.abs(average - r.truth).max() <= bound, subset
    model = unflatten(average, r.manifest)
    assert model["bn1.num_batches_tracked"].item() == 3
    assert model["bn1.num_batches_tracked"].dtype == torch.int64
    assert model["fc1.weight"].shape == (384, 1024)


def test_two_members_alone_learn_nothing_like_the_truth(federated_round: Round) -> None:
    r = federated_round
    params = r.setup.params
    subset = (1, 2)
    shares = [
        decryption_share(
            r.setup.members[k - 1].threshold_share, r.aggregate[:, 1], subset, params, r.digest
        )
        for k in subset
    ]
    decoded = decode_aggregate(combine(r.aggregate[:, 0], shares, params), r.setup.public.seal)
    garbage = decoded[1 : 1 + r.manifest.size]
    truth_sum = r.truth * r.total_weight
    # a typical slot is off by hundreds of times the largest true value …
    assert np.median(np.abs(garbage - truth_sum)) > 100 * np.abs(truth_sum).max()
    # … and carries no trace of it
    assert abs(np.corrcoef(garbage, truth_sum)[0, 1]) < 0.05


def test_summed_additive_shares_in_seal_decrypt_to_the_same_values(federated_round: Round) -> None:
    """TEST ONLY: s = Σ s_i as a SEAL SecretKey; SEAL's own Decryptor on the aggregate."""
    r = federated_round
    ctx = r.setup.public.seal
    decryptor = sealapi.Decryptor(ctx.context, summed_secret_key(r.setup))
    plains = []
    for block in r.aggregate:
        ct = ctx.load(
            sealapi.Ciphertext,
            ciphertext_to_bytes(SealCiphertext(ctx.data_parms_id, True, block, ctx.params.scale)),
        )
        plain = sealapi.Plaintext()
        decryptor.decrypt(ct, plain)
        plains.append(
            plaintext_from_bytes(save_bytes(plain)).data.reshape(len(ctx.params.data_primes), -1)
        )
    seal_average = weighted_average(decode_aggregate(np.stack(plains), ctx), r.manifest.size)
    threshold_average, _ = _decrypt(r, (1, 3, 5))
    bound = _average_bound(r)
    assert np.abs(seal_average - r.truth).max() <= bound
    assert np.abs(seal_average - threshold_average).max() <= 2 * bound


def test_flooding_below_the_rule_is_refused(federated_round: Round) -> None:
    r = federated_round
    params = r.setup.params
    with pytest.raises(DecryptionRefused):
        decryption_share(
            r.setup.members[0].threshold_share,
            r.aggregate[:, 1],
            (1, 2, 3),
            params,
            r.digest,
            flood_bits=_just_below_the_rule(params),
        )


def test_nothing_the_aggregator_holds_contains_secret_material(federated_round: Round) -> None:
    r = federated_round
    params = r.setup.params
    _, shares = _decrypt(r, (2, 3, 4))
    held = [
        *r.setup.relayed,  # commitments, public-key shares, encrypted Shamir shares
        *r.blobs,
        r.aggregate.tobytes(),
        ciphertext_to_bytes(r.setup.public.public_key),
        *(share.to_bytes(params) for share in shares),
    ]
    haystack = b"\x00".join(held)
    for member in r.setup.members:
        secrets = [
            member.identity.private_bytes(),
            member.secret.coeffs.tobytes(),
            member.secret.ntt_form(key_primes(params)).tobytes(),
            member.threshold_share.to_bytes(params)[4:],
            member.threshold_share.words.tobytes(),
        ]
        for secret in secrets:
            for start in (0, len(secret) // 2, len(secret) - 32):
                assert secret[start : start + 32] not in haystack
    # the scan covered every relayed message: n commitments, n public-key shares, n×n
    # encrypted Shamir shares
    assert len(r.setup.relayed) == MEMBERS + MEMBERS + MEMBERS * MEMBERS


def _just_below_the_rule(params: ParameterSet) -> int:
    """The largest flooding width in bits that the rule refuses (2^bits < the rule's σ)."""
    return math.floor(math.log2(params.required_flood_sigma()))
