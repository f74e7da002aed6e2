import dataclasses
import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg import wellformed
from he_agg.envelope import (
    AGGREGATE_CLIENT,
    EnvelopeView,
    Upload,
    decode_upload,
    encode_upload,
    expected_size,
)
from he_agg.errors import (
    EnvelopeError,
    FingerprintError,
    MagicError,
    MismatchError,
    SizeError,
    VersionError,
    WordRangeError,
)
from he_agg.params import DEFAULT, derive_parameters
from tests.helpers import random_words

P = derive_parameters("envelope-test", proofs=False)  # SEAL's path: no proofs section


def _upload(count: int = 2, seed: int = 0, client: str = "bank-1") -> Upload:
    words = random_words(P.data_primes, (count, 2), P.poly_degree, seed)
    return Upload("fed", 7, client, P.scale, words)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(0, 1000), st.text(min_size=1, max_size=30))
def test_round_trip(count: int, seed: int, client: str) -> None:
    upload = _upload(count, seed, client)
    blob = encode_upload(upload, P)
    assert len(blob) == expected_size(P, count, "fed", client)
    back = decode_upload(blob, P, federation="fed", round=7, client=client)
    assert (back.federation, back.round, back.client, back.scale) == ("fed", 7, client, P.scale)
    assert np.array_equal(back.words, upload.words)


def test_size_is_two_log_q_bits_per_coefficient() -> None:
    blob = encode_upload(_upload(1), P)
    assert len(blob) - 100 < 2 * P.poly_degree * sum(P.prime_bits) / 8 <= len(blob)


BLOB = encode_upload(_upload(2), P)


def _set(blob: bytes, offset: int, fmt: str, value: object) -> bytes:
    raw = bytearray(blob)
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


@pytest.mark.parametrize(
    ("corrupt", "error"),
    [
        (lambda b: b[:30], SizeError),
        (lambda b: b[:-1], SizeError),
        (lambda b: b + b"\x00", SizeError),
        (lambda b: b"XXXX" + b[4:], MagicError),
        (lambda b: _set(b, 4, "<H", 4), VersionError),
        (lambda b: _set(b, 8, "<B", b[8] ^ 1), FingerprintError),
        (lambda b: _set(b, 56, "<I", 3), SizeError),  # count says 3, body holds 2
        (lambda b: _set(b, 56, "<I", 0), MismatchError),
        (lambda b: _set(b, 60, "<d", 2.0**40), MismatchError),
        (lambda b: _set(b, 6, "<H", 99), SizeError),
    ],
    ids=[
        "header-truncated",
        "body-truncated",
        "too-long",
        "magic",
        "version",
        "fingerprint",
        "count-too-high",
        "count-zero",
        "scale",
        "header-length",
    ],
)
def test_malformed_envelopes_are_rejected_with_the_right_error(
    corrupt: object, error: type
) -> None:
    with pytest.raises(error):
        decode_upload(corrupt(BLOB), P)  # type: ignore[operator]


def test_word_at_or_above_its_prime_is_rejected() -> None:
    for j, q in enumerate(P.data_primes):
        upload = _upload(1)
        upload.words[0, 1, j, 5] = q
        with pytest.raises(WordRangeError):
            decode_upload(encode_upload(upload, P), P)


@pytest.mark.parametrize(
    ("expect", "value"),
    [("federation", "other"), ("round", 8), ("client", "bank-2"), ("epoch", 1)],
)
def test_mismatched_identity_is_rejected(expect: str, value: object) -> None:
    with pytest.raises(MismatchError):
        decode_upload(BLOB, P, **{expect: value})  # type: ignore[arg-type]


def test_count_above_the_round_limit_is_rejected() -> None:
    with pytest.raises(MismatchError):
        decode_upload(BLOB, P, max_count=1)


def test_other_parameter_set_is_rejected() -> None:
    other = derive_parameters("other", k_max=50)
    with pytest.raises(FingerprintError):
        decode_upload(BLOB, other)


def test_every_error_is_an_envelope_error() -> None:
    for bad in (b"", b"HEAG", BLOB[:-5]):
        with pytest.raises(EnvelopeError):
            decode_upload(bad, P)


def test_a_version_1_envelope_is_refused_with_a_clear_message() -> None:
    """Version 1 predates key epochs: its bytes are not re-read as if they had one."""
    with pytest.raises(VersionError, match="predates key epochs"):
        decode_upload(_set(BLOB, 4, "<H", 1), P)


def test_the_epoch_round_trips_and_is_bound_in_the_bytes() -> None:
    upload = dataclasses.replace(_upload(1), epoch=7)
    blob = encode_upload(upload, P)
    assert decode_upload(blob, P, epoch=7).epoch == 7
    assert struct.unpack_from("<Q", blob, 40) == (7,)
    assert hashlib.sha256(blob).digest() != hashlib.sha256(encode_upload(_upload(1), P)).digest()


# ---- format 3: the proofs section (a parameter set with proofs) ------------------------


def _proven(count: int, client: str = "bank-1") -> Upload:
    words = random_words(DEFAULT.data_primes, (count, 2), DEFAULT.poly_degree, 5)
    proofs = tuple(
        bytes([i]) * wellformed.proof_size(DEFAULT, size)
        for i, (_, size) in enumerate(wellformed.groups(count))
    )
    return Upload("fed", 7, client, DEFAULT.scale, words, 0, proofs)


def test_proofs_travel_in_the_envelope_and_round_trip() -> None:
    assert DEFAULT.proofs
    count = wellformed.PROOF_GROUP + 1  # two groups
    upload = _proven(count)
    blob = encode_upload(upload, DEFAULT)
    assert struct.unpack_from("<H", blob, 4) == (3,)
    assert len(blob) == expected_size(DEFAULT, count, "fed", "bank-1")
    back = decode_upload(blob, DEFAULT)
    assert back.proofs == upload.proofs and len(back.proofs) == 2
    with pytest.raises(SizeError):
        decode_upload(blob[:-1], DEFAULT)


def test_an_upload_without_its_proofs_is_refused() -> None:
    upload = _proven(1)
    with pytest.raises(MismatchError, match="proof"):
        encode_upload(dataclasses.replace(upload, proofs=()), DEFAULT)
    with pytest.raises(MismatchError, match="proof"):
        encode_upload(dataclasses.replace(upload, proofs=(b"short",)), DEFAULT)
    blob = encode_upload(upload, DEFAULT)
    stripped = blob[: len(blob) - len(upload.proofs[0])]
    with pytest.raises(SizeError):
        decode_upload(stripped, DEFAULT)


def test_a_version_2_envelope_is_refused_where_proofs_are_required() -> None:
    blob = encode_upload(_proven(1), DEFAULT)
    with pytest.raises(VersionError, match="carries no proofs"):
        decode_upload(_set(blob, 4, "<H", 2), DEFAULT)
    old = _set(BLOB, 4, "<H", 2)  # without proofs, version 2 is still read
    assert np.array_equal(decode_upload(old, P).words, decode_upload(BLOB, P).words)


def test_the_aggregate_carries_no_proofs() -> None:
    words = random_words(DEFAULT.data_primes, (1, 2), DEFAULT.poly_degree, 6)
    aggregate = Upload("fed", 7, AGGREGATE_CLIENT, DEFAULT.scale, words)
    assert decode_upload(encode_upload(aggregate, DEFAULT), DEFAULT).proofs == ()


def test_windows_of_an_envelope_in_bytes_are_read_in_place() -> None:
    """Parsed from ``bytes`` (a member's download, a test's blob), each window's packed
    region is a view of those bytes, not a copy (a 24 MB copy per upload before)."""
    words = random_words(P.data_primes, (3, 2), P.poly_degree, 9)
    blob = encode_upload(Upload("f", 1, "c", P.scale, words), P)
    view = EnvelopeView.parse(blob, P)
    whole = np.frombuffer(blob, dtype=np.uint8)
    for _, region in view.regions(1, 2):
        assert np.shares_memory(np.frombuffer(region, dtype=np.uint8), whole)
    assert np.array_equal(view.words(), words)
