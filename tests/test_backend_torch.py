"""The torch backend on the CPU: word for word he_agg.rlwe's encryption, its NTT and exact
mulmod against the references, SEAL decrypting what it encrypts, the backend choice, the
refusal of parameter sets whose noise rules do not cover it, the device aggregation
against RunningSum, and benchmarks/bench_gpu.py --quick."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")


import he_agg.backend as backend_module  # noqa: E402
from he_agg import bitpack, ntt  # noqa: E402
from he_agg.aggregate import RunningSum  # noqa: E402
from he_agg.backend import encrypt_vector, get_backend, words_encryptor  # noqa: E402
from he_agg.backend.native import NativeBackend  # noqa: E402
from he_agg.backend.seal import SealBackend  # noqa: E402
from he_agg.backend.torch_aggregate import DeviceRunningSum, unpack_device  # noqa: E402
from he_agg.backend.torch_backend import (  # noqa: E402
    TorchBackend,
    covers,
    forward_ntt,
    mod_constant,
    mul_mod,
)
from he_agg.envelope import AGGREGATE_CLIENT, Upload, decode_upload, encode_upload  # noqa: E402
from he_agg.errors import MismatchError, ParameterError, WordRangeError  # noqa: E402
from he_agg.modarith import U64Array  # noqa: E402
from he_agg.params import DEFAULT, ParameterSet, derive_parameters  # noqa: E402
from he_agg.rlwe import KeyRows, encrypt_words, fresh_noise_bound, sample_witness  # noqa: E402
from keys.committee import CommitteeSetup, run_committee_setup  # noqa: E402
from tests.helpers import decrypt_with_summed_key, random_words  # noqa: E402

CPU = torch.device("cpu")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """torch's CPU threads spin against each other on a busy 2-core runner; one is steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wide() -> ParameterSet:
    """60-bit primes (the limb path of mul_mod), as tests/test_wellformed.py uses."""
    return derive_parameters("wellformed-test", k_max=4, committee_max=3, value_bits=12)


@pytest.fixture(scope="module")
def e2e_committee(e2e_params: ParameterSet) -> CommitteeSetup:
    """N = 4096, two 44-bit primes, no proofs: rlwe's noise is not covered."""
    return run_committee_setup(e2e_params, "torch-fed", members=3, threshold=2)


@pytest.fixture(params=["default", "e2e", "wide"])
def any_set(request: pytest.FixtureRequest) -> ParameterSet:
    """DEFAULT (44/43/43 bits), e2e (N = 4096, 44/44) and wide (60/60, the limb path)."""
    if request.param == "default":
        return DEFAULT
    name = "e2e_params" if request.param == "e2e" else "wide"
    params: ParameterSet = request.getfixturevalue(name)
    return params


def _int64(words: U64Array) -> Any:  # a torch int64 tensor
    return torch.from_numpy(np.ascontiguousarray(words, dtype=np.uint64).view(np.int64))


# ---- exact modular multiplication --------------------------------------------------------


def _edge_values(q: int, rng: np.random.Generator) -> list[int]:
    return [0, 1, 2, q // 2, q - 2, q - 1, *(int(x) for x in rng.integers(0, q, 10))]


def test_mul_mod_equals_python_integers_on_edge_values(any_set: ParameterSet) -> None:
    params = any_set
    rng = np.random.default_rng(5)
    for q in params.data_primes:
        values = _edge_values(q, rng)
        a_values = values.copy()
        w_values = values.copy()
        for x in (int(v) for v in rng.integers(1, q, 5)):  # x·w ≡ 1 and ≡ q − 1: both ends
            a_values += [x, x]
            w_values += [pow(x, -1, q), q - pow(x, -1, q)]
        a = np.array(a_values, dtype=np.uint64)
        w = np.array(w_values, dtype=np.uint64)
        constant = mod_constant(w.reshape(1, 1, -1), (q,), CPU)
        moduli = torch.tensor([[q]], dtype=torch.int64)
        got = mul_mod(_int64(a).reshape(-1, 1), constant, moduli).numpy()
        # every a against every w, each product the exact integer remainder
        want = [[int(x) * int(y) % q for y in w_values] for x in a_values]
        assert got.reshape(len(a_values), len(w_values)).tolist() == want


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mul_mod_is_exact_for_any_operands(data: st.DataObject) -> None:
    wide_prime = 1152921504606748673  # 60 bits, ≡ 1 mod 2N: the limb path
    q = data.draw(st.sampled_from([*DEFAULT.data_primes, wide_prime]))
    pairs = data.draw(
        st.lists(st.tuples(st.integers(0, q - 1), st.integers(0, q - 1)), min_size=1, max_size=8)
    )
    a = np.array([x for x, _ in pairs], dtype=np.uint64)
    w = np.array([y for _, y in pairs], dtype=np.uint64)
    got = mul_mod(_int64(a), mod_constant(w.reshape(1, -1), (q,), CPU), torch.tensor(q))
    assert got.reshape(-1).tolist() == [x * y % q for x, y in pairs]


# ---- the NTT -------------------------------------------------------------------------------


def _ntt_inputs(primes: tuple[int, ...], n: int) -> U64Array:
    """Rows of zeros, of q − 1, a unit impulse, a lone q − 1, and random words."""
    rows = np.zeros((5, len(primes), n), dtype=np.uint64)
    for j, q in enumerate(primes):
        rows[1, j] = q - 1
        rows[2, j, 0] = 1
        rows[3, j, n - 1] = q - 1
    rows[4] = random_words(primes, (), n, seed=11)
    return rows


def test_torch_ntt_equals_the_reference_on_every_prime(any_set: ParameterSet) -> None:
    primes, n = any_set.data_primes, any_set.poly_degree
    values = _ntt_inputs(primes, n)
    backend = TorchBackend(CPU)
    got = backend.to_host(forward_ntt(_int64(values), backend.twiddles(primes, n)))
    for j, q in enumerate(primes):
        assert np.array_equal(got[:, j], ntt.forward(values[:, j], q)), f"prime {j}"
    assert not np.array_equal(got[4], values[4])  # it did transform


# ---- word for word he_agg.rlwe -------------------------------------------------------------


def test_encrypt_words_equals_the_reference(any_set: ParameterSet) -> None:
    """Several ciphertexts, over chunk boundaries, with an out-of-range witness entry too."""
    params = any_set
    primes, n, count = params.data_primes, params.poly_degree, 5
    rng = np.random.default_rng(3)
    key = KeyRows(random_words(primes, (), n, seed=1), random_words(primes, (), n, seed=2), primes)
    plain = random_words(primes, (count,), n, seed=4)
    witness = sample_witness(count, params)
    backend = TorchBackend(CPU, chunk=2)
    want = encrypt_words(plain, key, witness, params)
    assert np.array_equal(backend.encrypt_words(plain, key, witness, params), want)
    wild = dataclasses.replace(witness, e1=rng.integers(-(2**62), 2**62, witness.e1.shape))
    assert np.array_equal(
        backend.encrypt_words(plain, key, wild, params), encrypt_words(plain, key, wild, params)
    )


def test_encrypt_words_refuses_a_shape_mismatch() -> None:
    primes, n = DEFAULT.data_primes, DEFAULT.poly_degree
    key = KeyRows(random_words(primes, (), n), random_words(primes, (), n), primes)
    plain = random_words(primes, (2,), n)
    with pytest.raises(ValueError, match="disagree"):
        TorchBackend(CPU).encrypt_words(plain, key, sample_witness(3, DEFAULT), DEFAULT)


def test_a_new_key_replaces_the_cached_one() -> None:
    primes, n = DEFAULT.data_primes, DEFAULT.poly_degree
    keys = [
        KeyRows(random_words(primes, (), n, s), random_words(primes, (), n, s + 9), primes)
        for s in (1, 2)
    ]
    plain = random_words(primes, (1,), n, seed=3)
    witness = sample_witness(1, DEFAULT)
    backend = TorchBackend(CPU)
    for key in (*keys, keys[0]):
        want = encrypt_words(plain, key, witness, DEFAULT)
        assert np.array_equal(backend.encrypt_words(plain, key, witness, DEFAULT), want)


# ---- SEAL decrypts it -----------------------------------------------------------------------


def test_seal_decrypts_what_the_torch_backend_encrypts(committee: CommitteeSetup) -> None:
    params = committee.params
    values = np.random.default_rng(2).normal(size=params.slots + params.slots // 2) * 100
    finished: list[int] = []
    words = TorchBackend(CPU, chunk=1).encrypt(values, committee.public, finished.append)
    assert words.shape == (2, 2, len(params.data_primes), params.poly_degree)
    assert finished == [1, 1]
    decoded = decrypt_with_summed_key(committee, words)
    # rlwe's fresh noise, spread by decoding over ≤ N slots, plus SEAL's binary64 decoding
    bound = fresh_noise_bound(params) * params.poly_degree / params.scale
    bound += 1e-9 * np.abs(values).max()
    assert np.abs(decoded[: values.size] - values).max() <= bound
    assert np.abs(decoded[values.size :]).max() <= bound  # the zero padding
    fresh = TorchBackend(CPU).encrypt(values, committee.public)
    assert not np.array_equal(fresh, words)  # fresh randomness each time


# ---- which backend --------------------------------------------------------------------------


@pytest.fixture
def fresh_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_module, "_instances", {})
    monkeypatch.delenv(backend_module.BACKEND_ENV, raising=False)


@pytest.mark.usefixtures("fresh_instances")
def test_the_environment_variable_names_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HE_AGG_BACKEND", "torch")
    assert isinstance(get_backend(), TorchBackend)
    assert get_backend().name == "torch"
    assert isinstance(get_backend("seal"), SealBackend)  # a name passed wins
    monkeypatch.setenv("HE_AGG_BACKEND", "seal")
    assert isinstance(get_backend(), SealBackend)
    assert words_encryptor() is encrypt_words
    monkeypatch.setenv("HE_AGG_BACKEND", "native")
    assert isinstance(get_backend(), NativeBackend)


@pytest.mark.usefixtures("fresh_instances")
def test_auto_picks_torch_only_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert isinstance(get_backend(), NativeBackend)
    assert isinstance(get_backend("auto"), NativeBackend)
    assert words_encryptor("auto") is encrypt_words
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    chosen = get_backend("auto")
    assert isinstance(chosen, TorchBackend) and chosen.device.type == "cuda"
    encryptor = words_encryptor()
    assert getattr(encryptor, "__self__", None) is chosen


@pytest.mark.usefixtures("fresh_instances")
def test_unknown_backends_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ParameterError, match="unknown encryption backend 'gpu'"):
        get_backend("gpu")
    monkeypatch.setenv("HE_AGG_BACKEND", "cuda")
    with pytest.raises(ParameterError, match="unknown encryption backend 'cuda'"):
        get_backend()
    with pytest.raises(ParameterError):
        words_encryptor()


# ---- parameter sets the backend may not serve ---------------------------------------------


def test_a_set_whose_noise_rule_does_not_cover_rlwe_is_refused(
    e2e_committee: CommitteeSetup,
) -> None:
    params = e2e_committee.params
    assert covers(DEFAULT) and not covers(params)
    with pytest.raises(ParameterError, match="noise") as caught:
        TorchBackend(CPU).encrypt(np.ones(10), e2e_committee.public)
    assert caught.value.rule == "noise"


@pytest.mark.usefixtures("fresh_instances")
def test_auto_falls_back_to_native_for_a_set_torch_may_not_serve(
    monkeypatch: pytest.MonkeyPatch, e2e_committee: CommitteeSetup
) -> None:
    """On a CUDA machine, ``auto`` still encrypts a set without proofs, with the native
    backend (SEAL's formula)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    words = encrypt_vector(np.ones(10), e2e_committee.public)  # cuda is not there: native ran
    assert words.shape == (1, 2, 2, e2e_committee.params.poly_degree)
    monkeypatch.setenv("HE_AGG_BACKEND", "torch")  # asked for by name: refused, not replaced
    with pytest.raises(ParameterError, match="noise"):
        encrypt_vector(np.ones(10), e2e_committee.public)


# ---- aggregation on the device ---------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 7, 31, 43, 44, 60, 63])
def test_device_unpack_equals_bitpack(width: int) -> None:
    words = np.random.default_rng(width).integers(0, 2**width, 4 * 64, dtype=np.uint64)
    words[:64] = 2**width - 1  # every bit set, the sign bit of spilled words included
    packed = bitpack.pack(words, width)
    stream = torch.frombuffer(bytearray(packed), dtype=torch.int64)
    got = unpack_device(stream, width, words.size).numpy().view(np.uint64)
    assert np.array_equal(got, bitpack.unpack(packed, width, words.size))
    assert np.array_equal(got, words)


def _envelope(params: ParameterSet, words: U64Array) -> bytes:
    upload = Upload("torch-fed", 1, AGGREGATE_CLIENT, params.scale, words)
    return encode_upload(upload, params)


def test_device_sum_equals_running_sum(any_set: ParameterSet) -> None:
    """Bit for bit RunningSum's, through lazy reductions (a budget of two)."""
    params, count = any_set, 3
    primes, n = params.data_primes, params.poly_degree
    uploads = [random_words(primes, (count, 2), n, seed=s) for s in range(4)]
    top = np.array(primes, np.uint64).reshape(-1, 1) - np.uint64(1)
    uploads.append(np.broadcast_to(top, uploads[0].shape).copy())  # every word q − 1
    device_sum = DeviceRunningSum(params, count, CPU)
    device_sum._budget = 2
    host_sum = RunningSum(params, count)
    for words in uploads:
        blob = _envelope(params, words)
        device_sum.add_envelope(blob, round=1)
        host_sum.add(decode_upload(blob, params).words)
    assert device_sum.added == len(uploads)
    assert np.array_equal(device_sum.result(), host_sum.result())


def test_device_sum_refuses_a_word_at_its_prime_and_adds_nothing(e2e_params: ParameterSet) -> None:
    params, count = e2e_params, 2
    primes, n = params.data_primes, params.poly_degree
    good = random_words(primes, (count, 2), n, seed=1)
    device_sum = DeviceRunningSum(params, count, CPU)
    device_sum.add_envelope(_envelope(params, good))
    bad = random_words(primes, (count, 2), n, seed=2)
    bad[1, 1, 1, n - 1] = primes[1]
    with pytest.raises(WordRangeError):
        device_sum.add_envelope(_envelope(params, bad))
    with pytest.raises(MismatchError, match="ciphertexts"):
        device_sum.add_envelope(_envelope(params, good[:1]))
    assert device_sum.added == 1
    assert np.array_equal(device_sum.result(), good)
    device_sum.add_words(good)
    moduli = np.array(primes, np.uint64).reshape(-1, 1)
    assert np.array_equal(device_sum.result(), (good + good) % moduli)


# ---- benchmarks/bench_gpu.py --quick --------------------------------------------------------


def test_bench_gpu_quick_runs_on_the_cpu(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu.json"
    bench.main(["--quick", "--device", "cpu", "--out", str(out)])
    data = json.loads(out.read_text())
    assert {"environment", "parameter_set", "sizes", "gpu", "cpu", "speedup"} <= set(data)
    assert data["environment"]["device"] == "cpu" and data["environment"]["torch"]
    stages = data["gpu"]["encrypt"]["stages"]
    assert set(stages) == {"encode", "sample", "upload", "compute", "download"}
    timings = [
        data["gpu"]["encrypt"]["total"],
        data["gpu"]["aggregate"],
        data["cpu"]["encrypt_rlwe"],
        data["cpu"]["encrypt_seal"],
        data["cpu"]["aggregate"],
        *stages.values(),
    ]
    for timing in timings:
        assert 0 < timing["median"] < math.inf
        assert timing["median_per_million"] > timing["median"]  # quick runs < 1M parameters
    assert data["sizes"]["parameters"] < 10**6
