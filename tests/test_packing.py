import numpy as np
import pytest
import torch

from he_agg.errors import PackingError
from he_agg.packing import Manifest, flatten, unflatten, weighted_average, weighted_vector
from he_agg.params import DEFAULT


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
