"""The simulation API: real protocol, article-style calls, plaintext twin with the same seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from clients.simulation import DPConfig, FederatedLearning, partition_indices
from clients.simulation.dp import epsilon
from he_agg.packing import flatten


def _blobs(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    labels = rng.integers(0, 3, n)
    return (centres[labels] + rng.normal(0, 0.7, (n, 2))).astype(np.float32), labels


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))


def _run(rounds: int = 4, **options: object) -> Any:
    fl = FederatedLearning(
        _tiny(),
        num_rounds=rounds,
        clients_per_round=3,
        learning_rate=0.1,
        optimizer="sgd",
        local_epochs=3,
        show_progress=False,
        **options,
    )  # type: ignore[arg-type]
    return fl.load_data(_blobs(), num_clients=6).train()


def test_tiny_model_learns_through_encrypted_rounds() -> None:
    history = _run()
    assert len(history.rounds) == 4
    assert history.rounds[-1].metrics["accuracy"] > 0.85  # chance is 1/3
    record = history.rounds[0]
    assert len(record.clients) == 3 and record.bytes_uploaded > 3 * 1000
    assert {"train", "encrypt", "aggregate", "decrypt", "evaluate"} <= set(record.seconds)


def test_he_and_plaintext_histories_agree_within_the_ckks_bound() -> None:
    secure, plain = _run(secure=True), _run(secure=False)
    assert [r.clients for r in secure.rounds] == [r.clients for r in plain.rounds]
    for a, b in zip(secure.rounds, plain.rounds, strict=True):
        assert abs(a.metrics["loss"] - b.metrics["loss"]) < 1e-5
        assert a.metrics["accuracy"] == b.metrics["accuracy"]
    gap = np.abs(flatten(secure.final_state)[0] - flatten(plain.final_state)[0]).max()
    # within the CKKS bound; the noise is random and often below float32's rounding of the
    # weights, so the states may also be equal: that the secure run really went through
    # CKKS is shown by what it uploaded (ciphertexts, many times the float32 bytes)
    assert gap < 1e-5
    for he, twin in zip(secure.rounds, plain.rounds, strict=True):
        assert he.bytes_uploaded > 10 * twin.bytes_uploaded > 0


def test_the_seed_fixes_the_initial_model_however_it_was_built() -> None:
    """Models built under different torch seeds start equal once given to FederatedLearning
    with one seed (so ``secure=False`` is the same-seed baseline); another seed differs;
    ``reinitialise=False`` keeps the weights passed in; the global generator is untouched."""

    def built(torch_seed: int) -> nn.Module:
        torch.manual_seed(torch_seed)
        return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))

    def start(model: nn.Module, **options: Any) -> np.ndarray:
        fl = FederatedLearning(model, show_progress=False, **options)
        return flatten(fl.model.state_dict())[0]

    assert np.array_equal(start(built(1), seed=5), start(built(2), seed=5))
    assert not np.array_equal(start(built(1), seed=5), start(built(1), seed=6))
    kept = built(3)
    before = flatten(kept.state_dict())[0]
    assert np.array_equal(start(kept, seed=5, reinitialise=False), before)
    model = built(4)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    FederatedLearning(model, seed=9, show_progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_partitions() -> None:
    labels = np.repeat(np.arange(4), 50)
    rng = np.random.default_rng(0)
    iid = partition_indices(labels, 4, "iid", rng)
    assert sorted(np.concatenate(iid).tolist()) == list(range(200))
    skewed = partition_indices(labels, 4, "dirichlet", rng, alpha=0.1)
    assert sorted(np.concatenate(skewed).tolist()) == list(range(200))
    share = [np.bincount(labels[p], minlength=4).max() / len(p) for p in skewed]
    assert max(share) > 0.6  # non-IID: some client is dominated by one label
    custom = partition_indices(
        labels, 2, lambda y, k, r: [np.arange(0, 10), np.arange(10, 20)], rng
    )
    assert [len(p) for p in custom] == [10, 10]
    with pytest.raises(ValueError, match="without data"):
        partition_indices(
            labels, 3, lambda y, k, r: [np.arange(5), np.arange(0), np.arange(2)], rng
        )
    with pytest.raises(ValueError):
        partition_indices(labels, 3, "round-robin", rng)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        FederatedLearning(_tiny(), num_rounds=0)
    with pytest.raises(ValueError):
        FederatedLearning(_tiny(), transport="carrier-pigeon")
    with pytest.raises(ValueError, match="load_data"):
        FederatedLearning(_tiny(), show_progress=False).train()


def _exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Balle & Wang's analytic Gaussian mechanism (sensitivity 1), by bisection."""

    def delta_of(eps: float) -> float:
        return float(
            norm.cdf(-eps * sigma + 1 / (2 * sigma))
            - math.exp(eps) * norm.cdf(-eps * sigma - 1 / (2 * sigma))
        )

    low, high = 0.0, 100.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if delta_of(middle) > delta else (low, middle)
    return high


def test_accountant_matches_the_gaussian_mechanism_for_full_participation() -> None:
    # T rounds at σ with every client in each round compose to one Gaussian at σ/√T.
    sigma, rounds, delta = 2.0, 10, 1e-5
    exact = _exact_gaussian_epsilon(sigma / math.sqrt(rounds), delta)
    ours = epsilon(sigma, 1.0, rounds, delta)
    assert exact <= ours <= 1.25 * exact
    assert epsilon(sigma, 0.1, rounds, delta) < ours  # subsampling amplifies privacy
    assert epsilon(sigma, 1.0, 0, delta) == 0.0


def test_dp_rounds_report_a_growing_epsilon() -> None:
    history = _run(dp=DPConfig(clip_norm=1.0, noise_multiplier=1.0))
    eps = [r.epsilon for r in history.rounds]
    assert all(e is not None for e in eps) and eps == sorted(eps) and eps[0] > 0  # type: ignore[type-var]
    with pytest.raises(ValueError):
        DPConfig(clip_norm=0, noise_multiplier=1)


def test_http_transport_runs_the_same_rounds_through_the_rest_stack() -> None:
    over_http = _run(rounds=2, transport="http")
    twin = _run(rounds=2, secure=False)
    gap = np.abs(flatten(over_http.final_state)[0] - flatten(twin.final_state)[0]).max()
    assert gap < 1e-5
    # Encrypted, not plaintext, went over the wire: CKKS uploads cost ≥ 2·log2(q)/8 bytes per
    # parameter against 4 for float32. (The CKKS error itself may round away in float32, so
    # the gap can be exactly 0 and proves nothing either way.)
    parameters = sum(t.numel() for t in over_http.final_state.values())
    sent, plain = over_http.rounds[0].bytes_uploaded, twin.rounds[0].bytes_uploaded
    assert sent >= 3 * 20 * parameters > 3 * plain
    assert "aggregate+decrypt" in over_http.rounds[0].seconds


def test_plaintext_over_http_goes_through_a_plaintext_federation_on_the_server(
    tmp_path: Path,
) -> None:
    """The like-for-like baseline: the same rounds uploaded in the clear to the service,
    which averages them; the same model as the in-process average, and the server's log
    shows the uploads."""
    over_http = _run(rounds=2, transport="http", secure=False, log_dir=tmp_path)
    local = _run(rounds=2, secure=False)
    gap = np.abs(flatten(over_http.final_state)[0] - flatten(local.final_state)[0]).max()
    assert gap < 1e-5
    assert set(over_http.rounds[0].seconds) == {"train", "upload", "aggregate", "evaluate"}
    events = [json.loads(line)["event"] for line in (tmp_path / "server.log").open()]
    assert events.count("upload stored") == 2 * 3 and events.count("model published") == 2
    assert not list(tmp_path.glob("member-*.log"))  # no committee in a plaintext federation


def test_http_without_proofs_uploads_less_and_reaches_the_same_model() -> None:
    with_proofs = _run(rounds=1, transport="http")
    without = _run(rounds=1, transport="http", proofs=False)
    gap = np.abs(flatten(with_proofs.final_state)[0] - flatten(without.final_state)[0]).max()
    assert gap < 1e-5
    assert without.rounds[0].bytes_uploaded < with_proofs.rounds[0].bytes_uploaded
