import numpy as np
import pytest
import tenseal.sealapi as sealapi
import torch

from he_agg import ntt
from he_agg.encoding import decode_words, encode_block
from he_agg.errors import PackingError
from he_agg.modarith import add_mod
from he_agg.packing import Manifest, flatten, unflatten, weighted_average, weighted_vector
from he_agg.params import DEFAULT, FLOOD_TAIL, SUPPORTED_MAX_SAMPLES, SUPPORTED_MAX_VALUE
from he_agg.sampling import flooding_noise_rns
from he_agg.seal_codec import plaintext_from_bytes
from he_agg.seal_context import save_bytes, seal_context


def _model_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(6, 2)
    )
    model(torch.randn(2, 1, 8, 8))  # one training-mode pass moves the BatchNorm buffers
    return model.state_dict()


def test_state_dict_round_trip_is_exact_without_noise() -> None:
    state = _model_state()
    vector, manifest = flatten(state)
    assert vector.size == sum(t.numel() for t in state.values())
    back = unflatten(vector, Manifest.from_json(manifest.to_json()))
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor)
    assert state["1.num_batches_tracked"].item() == 1


def test_integer_buffers_round_and_floats_stay_close_under_small_noise() -> None:
    state = _model_state()
    vector, manifest = flatten(state)
    noisy = vector + np.random.default_rng(0).normal(0, 1e-6, vector.size)
    back = unflatten(noisy, manifest)
    assert torch.equal(back["1.num_batches_tracked"], state["1.num_batches_tracked"])
    assert torch.allclose(back["0.weight"], state["0.weight"], atol=1e-5)


def test_numpy_mapping_round_trip() -> None:
    update = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array([3], dtype=np.int32)}
    vector, manifest = flatten(update)
    back = unflatten(vector, manifest)
    assert back["w"].dtype == np.float32 and np.array_equal(back["w"], update["w"])
    assert back["n"].dtype == np.int32 and back["n"].tolist() == [3]


def test_weighted_vector_reserves_slot_zero_for_the_count() -> None:
    vector = np.array([0.5, -0.25])
    weighted = weighted_vector(vector, 4, DEFAULT)
    assert weighted.tolist() == [4.0, 2.0, -1.0]
    assert weighted_average(weighted * 3, 2).tolist() == [0.5, -0.25]


@pytest.mark.parametrize("samples", [0, -1, float("nan")])
def test_weighted_vector_refuses_bad_counts(samples: float) -> None:
    with pytest.raises(PackingError):
        weighted_vector(np.ones(3), samples, DEFAULT)


def test_weighted_vector_refuses_values_beyond_the_client_bound() -> None:
    limit = DEFAULT.client_value_bound
    weighted_vector(np.array([limit / 2]), 2, DEFAULT)
    with pytest.raises(PackingError, match="per-client bound"):
        weighted_vector(np.array([limit]), 2, DEFAULT)


def _decrypt_like_a_committee(weighted: np.ndarray, members: int) -> np.ndarray:
    """SEAL-encode one block, add the flooding noise of ``members`` shares, decode."""
    params, ctx = DEFAULT, seal_context(DEFAULT)
    encoder = sealapi.CKKSEncoder(ctx.context)
    block = np.zeros(params.slots)
    block[: weighted.size] = weighted
    plain = encode_block(block, ctx, encoder)
    words = plaintext_from_bytes(save_bytes(plain)).data.reshape(len(params.data_primes), -1).copy()
    primes = params.data_primes
    for _ in range(members):  # each member's flooding, drawn as the members draw it
        rns = flooding_noise_rns((params.poly_degree,), params.flood_bits, FLOOD_TAIL, primes)
        for j, q in enumerate(primes):
            words[j] = add_mod(words[j], ntt.forward(rns[j], q), q)
    return decode_words(words, ctx, encoder)


def test_the_supported_range_round_trips_within_the_precision_bound() -> None:
    rng = np.random.default_rng(3)
    values = rng.choice([-1.0, 1.0], DEFAULT.slots - 1) * SUPPORTED_MAX_VALUE
    values[:10] = rng.uniform(-SUPPORTED_MAX_VALUE, SUPPORTED_MAX_VALUE, 10)
    weighted = weighted_vector(values, SUPPORTED_MAX_SAMPLES, DEFAULT)  # |n_k·x| = 10^9
    members = DEFAULT.committee_max
    decoded = _decrypt_like_a_committee(weighted, members)
    bound = DEFAULT.error_bound(members)
    assert abs(decoded[0] - SUPPORTED_MAX_SAMPLES) <= bound
    # avg − x = (e_i − x·e_0)/(n + e_0): the count's error scales every value
    error = bound * (1 + np.abs(values)) / (SUPPORTED_MAX_SAMPLES - bound)
    average = weighted_average(decoded, values.size)
    assert (np.abs(average - values) <= error).all()


def test_a_client_beyond_the_range_is_refused_with_the_bound_named() -> None:
    values = np.full(4, float(SUPPORTED_MAX_VALUE))
    weighted_vector(values, SUPPORTED_MAX_SAMPLES, DEFAULT)
    with pytest.raises(PackingError, match=r"V/K_max = 2\^40/1000 = 1\.1e\+09"):
        weighted_vector(values, 2 * SUPPORTED_MAX_SAMPLES, DEFAULT)
    with pytest.raises(PackingError, match="per-client bound"):
        weighted_vector(np.array([2.0 * SUPPORTED_MAX_VALUE]), SUPPORTED_MAX_SAMPLES, DEFAULT)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(PackingError):
        flatten({})
    with pytest.raises(PackingError):
        flatten({"x": np.array([np.nan])})
    with pytest.raises(PackingError):
        flatten({"x": np.array(["text"])})
    with pytest.raises(PackingError):
        Manifest.from_json("{not json")


def test_manifest_header_is_compact_and_round_trips() -> None:
    update = {
        f"backbone.layer{i}.conv.weight": np.zeros((8, 8, 3, 3), np.float32) for i in range(320)
    }  # a ResNet-sized list of tensors
    manifest = flatten(update)[1]
    header = manifest.to_header()
    assert len(header) < len(manifest.to_json()) / 4 and len(header) < 8000
    assert Manifest.from_header(header) == manifest
    assert Manifest.from_header(manifest.to_json()) == manifest  # plain JSON still reads
    for bad in ("zlib:!!!", "zlib:" + "A" * 12):
        with pytest.raises(PackingError):
            Manifest.from_header(bad)
