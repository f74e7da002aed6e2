import struct

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from he_agg.errors import SealFormatError
from he_agg.params import DEFAULT
from he_agg.seal_codec import (
    SealCiphertext,
    ciphertext_from_bytes,
    ciphertext_to_bytes,
    plaintext_from_bytes,
    seal_version,
)
from he_agg.seal_context import save_bytes, seal_context
from tests.helpers import random_words


@pytest.fixture(scope="module")
def seal_keys() -> tuple[object, object]:
    ctx = seal_context(DEFAULT)
    generator = sealapi.KeyGenerator(ctx.context)
    public = sealapi.PublicKey()
    generator.create_public_key(public)
    return public, generator.secret_key()


def test_reads_seal_public_key_and_writes_it_back_loadable(
    seal_keys: tuple[object, object],
) -> None:
    ctx = seal_context(DEFAULT)
    public, _ = seal_keys
    parsed = ciphertext_from_bytes(save_bytes(public))  # SEAL wrote it zstd-compressed
    assert parsed.parms_id == ctx.key_parms_id and parsed.is_ntt_form
    assert parsed.data.shape == (2, len(DEFAULT.data_primes) + 1, DEFAULT.poly_degree)
    reloaded = ctx.load(sealapi.PublicKey, ciphertext_to_bytes(parsed))
    assert np.array_equal(ciphertext_from_bytes(save_bytes(reloaded)).data, parsed.data)


def test_reads_secret_key_as_plaintext(seal_keys: tuple[object, object]) -> None:
    _, secret = seal_keys
    parsed = plaintext_from_bytes(save_bytes(secret))
    assert parsed.data.size == (len(DEFAULT.data_primes) + 1) * DEFAULT.poly_degree
    assert parsed.parms_id == seal_context(DEFAULT).key_parms_id


def test_ciphertext_round_trip_through_seal() -> None:
    ctx = seal_context(DEFAULT)
    words = random_words(DEFAULT.data_primes, (2,), DEFAULT.poly_degree)
    ct = SealCiphertext(ctx.data_parms_id, True, words, DEFAULT.scale)
    loaded = ctx.load(sealapi.Ciphertext, ciphertext_to_bytes(ct))
    back = ciphertext_from_bytes(save_bytes(loaded))
    assert back == SealCiphertext(ctx.data_parms_id, True, back.data, DEFAULT.scale)
    assert np.array_equal(back.data, words)


def test_version_comes_from_the_library() -> None:
    blob = save_bytes(sealapi.Plaintext())
    assert struct.unpack_from("<BB", blob, 3) == seal_version()


def _valid_blob() -> bytes:
    ctx = seal_context(DEFAULT)
    words = random_words(DEFAULT.data_primes, (2,), DEFAULT.poly_degree)
    return ciphertext_to_bytes(SealCiphertext(ctx.data_parms_id, True, words, DEFAULT.scale))


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b[:10],  # shorter than a header
        lambda b: b"\x00\x00" + b[2:],  # bad magic
        lambda b: b[:3] + bytes([b[3] + 1]) + b[4:],  # other SEAL version
        lambda b: b[:-8],  # truncated body
        lambda b: b + b"\x00" * 8,  # longer than declared
        lambda b: b[:5] + b"\x09" + b[6:],  # unknown compression mode
    ],
    ids=["short", "magic", "version", "truncated", "long", "compression"],
)
def test_malformed_seal_bytes_raise_seal_format_error(corrupt: object) -> None:
    with pytest.raises(SealFormatError):
        ciphertext_from_bytes(corrupt(_valid_blob()))  # type: ignore[operator]


def test_seal_itself_refuses_a_word_above_its_prime() -> None:
    ctx = seal_context(DEFAULT)
    words = random_words(DEFAULT.data_primes, (2,), DEFAULT.poly_degree)
    words[0, 0, 0] = DEFAULT.data_primes[0]
    with pytest.raises(SealFormatError):
        ctx.load(
            sealapi.Ciphertext,
            ciphertext_to_bytes(SealCiphertext(ctx.data_parms_id, True, words, 1.0)),
        )
