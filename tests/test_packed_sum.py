"""The compiled packed-residue kernels against the numpy reference, word for word."""

import numpy as np
import pytest

from he_agg.aggregate import RunningSum, sum_uploads
from he_agg.bitpack import pack, unpack
from he_agg.envelope import EnvelopeView, Upload, decode_upload, encode_upload
from he_agg.errors import WordRangeError
from he_agg.packed_sum import add_packed, check_packed, kernel_source, unpack_packed
from he_agg.params import DEFAULT, derive_parameters
from tests.helpers import random_words

P = derive_parameters("aggregate-test", proofs=False)
# every width of the shipped sets, the edges, and widths whose groups straddle words oddly
WIDTHS = sorted({1, 7, 31, 32, 33, 57, 63} | {q.bit_length() for q in DEFAULT.data_primes})


def _prime_below(width: int, rng: np.random.Generator) -> int:
    """Some modulus of exactly ``width`` bits (the kernels need not know it is prime)."""
    return int(rng.integers(1 << (width - 1), (1 << width) - 1)) if width > 1 else 1


@pytest.mark.parametrize("width", WIDTHS)
def test_add_packed_equals_unpack_then_add(width: int) -> None:
    rng = np.random.default_rng(width)
    q = _prime_below(width, rng)
    rows, n = 6, 128
    acc = rng.integers(0, 1 << 40, (rows, n), dtype=np.uint64)
    expected = acc.copy()
    for _ in range(3):
        words = rng.integers(0, q, rows * n, dtype=np.uint64)
        region = pack(words, width)
        add_packed(acc, region, width, q)
        expected += unpack(region, width, rows * n).reshape(rows, n)
        check_packed(region, width, q)
    assert np.array_equal(acc, expected)


@pytest.mark.parametrize("width", WIDTHS)
def test_unpack_packed_equals_the_reference_into_strided_rows(width: int) -> None:
    """The verifiers' unpack writes one prime's rows of an (count, 2, L, N) array in place:
    the reference's words, and nothing else of the array touched."""
    rng = np.random.default_rng(200 + width)
    q = _prime_below(width, rng)
    count, primes, n = 3, 3, 128
    words = rng.integers(0, q, count * 2 * n, dtype=np.uint64)
    out = np.full((count, 2, primes, n), 7, dtype=np.uint64)
    rows = out[:, :, 1, :].reshape(count * 2, n)
    assert not rows.flags.c_contiguous and np.may_share_memory(rows, out)
    unpack_packed(rows, pack(words, width), width, q)
    assert np.array_equal(
        out[:, :, 1, :].reshape(-1), unpack(pack(words, width), width, words.size)
    )
    assert (out[:, :, [0, 2], :] == 7).all()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("bad", ["q", "all ones"])
def test_a_word_at_or_above_the_prime_is_refused(width: int, bad: str) -> None:
    rng = np.random.default_rng(100 + width)
    q = _prime_below(width, rng)
    words = rng.integers(0, q, 4 * 64, dtype=np.uint64)
    position = int(rng.integers(0, words.size))
    words[position] = q if bad == "q" else (1 << width) - 1
    region = pack(words, width)
    with pytest.raises(WordRangeError):
        check_packed(region, width, q)
    with pytest.raises(WordRangeError):
        add_packed(np.zeros((4, 64), np.uint64), region, width, q)
    with pytest.raises(WordRangeError):
        unpack_packed(np.zeros((4, 64), np.uint64), region, width, q)


def test_regions_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(ValueError):
        add_packed(np.zeros((2, 64), np.uint64), bytes(8 * 44 * 2 - 8), 44, 3)
    with pytest.raises(ValueError):
        check_packed(bytes(44 * 8 + 1), 44, 3)
    with pytest.raises(ValueError):
        kernel_source(64)


def test_unaligned_regions_are_read_where_they_lie() -> None:
    """Regions inside an envelope start at any byte offset (the header is not padded)."""
    rng = np.random.default_rng(7)
    width, q = 43, 8796092792833
    words = rng.integers(0, q, 2 * 64, dtype=np.uint64)
    for offset in range(1, 8):
        blob = bytes(offset) + pack(words, width)
        acc = np.zeros((2, 64), np.uint64)
        add_packed(acc, memoryview(blob)[offset:], width, q)
        assert np.array_equal(acc.reshape(-1), words)


@pytest.mark.parametrize("window", [1, 2, 5])
def test_running_sum_from_wire_bytes_equals_the_reference(window: int) -> None:
    uploads = [
        Upload("f", 1, f"c{i}", P.scale, random_words(P.data_primes, (5, 2), P.poly_degree, i))
        for i in range(4)
    ]
    blobs = [encode_upload(u, P) for u in uploads]
    compiled = RunningSum(P, 5)
    compiled._budget = 2  # force lazy reductions between adds
    for blob in blobs:
        compiled.add_envelope(EnvelopeView.parse(blob, P), window)
    reference = sum_uploads((decode_upload(b, P) for b in blobs), P)
    assert compiled.added == 4
    assert np.array_equal(compiled.result(), reference)


def test_check_words_refuses_a_tampered_envelope() -> None:
    words = random_words(P.data_primes, (3, 2), P.poly_degree, 11)
    words[2, 1, -1, 5] = P.data_primes[-1]  # the last prime's region, last ciphertext
    blob = encode_upload(Upload("f", 1, "c", P.scale, words), P)
    view = EnvelopeView.parse(blob, P)
    with pytest.raises(WordRangeError):
        view.check_words(2)
    running = RunningSum(P, 3)
    with pytest.raises(WordRangeError):
        running.add_envelope(view, 2)


def test_kernels_compile_into_the_configured_cache(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import he_agg.packed_sum as packed_sum

    monkeypatch.setenv("HE_AGG_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(packed_sum, "_kernels", {})
    words = np.arange(64, dtype=np.uint64)
    check_packed(pack(words, 9), 9, 64)
    written = list(tmp_path.glob("packed_w9_*.py"))
    source = written[0].read_text() if len(written) == 1 else ""
    assert all(f"def {kernel}(" in source for kernel in ("add", "unpack", "check"))


def test_a_kernel_that_cannot_load_falls_back_to_the_reference(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A broken kernel cache (or compiler) costs speed, never an upload: the reference
    path answers, the same words and the same refusals."""
    import he_agg.packed_sum as packed_sum

    def broken(width: int) -> object:
        raise ModuleNotFoundError("no module named 'he_agg_kernels_packed_w44_…'")

    monkeypatch.setattr(packed_sum, "_kernel", broken)
    monkeypatch.setattr(packed_sum, "_broken", set())
    rng = np.random.default_rng(5)
    q = 17592186028033
    words = rng.integers(0, q, 3 * 128, dtype=np.uint64)
    acc = np.ones((3, 128), np.uint64)
    add_packed(acc, pack(words, 44), 44, q)
    assert np.array_equal(acc, words.reshape(3, 128) + 1)
    check_packed(pack(words, 44), 44, q)
    words[7] = q
    with pytest.raises(WordRangeError):
        check_packed(pack(words, 44), 44, q)
    with pytest.raises(WordRangeError):
        add_packed(acc, pack(words, 44), 44, q)
    with pytest.raises(WordRangeError):
        unpack_packed(np.empty((3, 128), np.uint64), pack(words, 44), 44, q)
    words[7] = 5
    out = np.empty((6, 128), np.uint64)[::2]  # strided rows, as the verifiers pass them
    unpack_packed(out, pack(words, 44), 44, q)
    assert np.array_equal(out, words.reshape(3, 128))
    assert packed_sum._broken == {44}


_WARM_THEN_USE = """
import os, sys, tempfile
from he_agg.aggregate import RunningSum
from he_agg.envelope import AGGREGATE_CLIENT, EnvelopeView, Upload, encode_upload
from he_agg.packed_sum import _kernels, warm
from he_agg.params import DEFAULT as P
from he_agg.server.store import FileBytes
from tests.helpers import random_words

def signatures():
    return {(w, k): len(getattr(m, k).signatures) for w, m in _kernels.items()
            for k in ("add", "unpack", "check")}

warm(P.data_primes)
warmed = signatures()
words = random_words(P.data_primes, (2, 2), P.poly_degree, 3)
blob = encode_upload(Upload("f", 1, AGGREGATE_CLIENT, P.scale, words), P)
with tempfile.TemporaryFile() as scratch:  # as the server reads a body: from its file
    scratch.write(blob)
    scratch.flush()
    for data in (blob, FileBytes(scratch.fileno())):
        view = EnvelopeView.parse(data, P)
        view.check_words(1)
        assert (view.words() == words).all()
        RunningSum(P, 2).add_envelope(view, 1)
print(sorted(warmed.items()) == sorted(signatures().items()), sorted(warmed.values()))
"""


def test_warm_compiles_what_the_server_and_members_then_call() -> None:
    """In a fresh process, :func:`warm` leaves each kernel of the default widths compiled
    once, with the argument types that checking, unpacking and adding an envelope (from
    bytes, or from a stored file as the server reads it) then use: those add none."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _WARM_THEN_USE],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,  # a machine without the kernel cache compiles them (seconds each)
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    widths = len({q.bit_length() for q in DEFAULT.data_primes})
    assert done.stdout.strip() == f"True {[1] * 3 * widths}", done.stdout
