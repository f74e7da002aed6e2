import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.bitpack import pack, packed_size, unpack


@settings(max_examples=80)
@given(
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=1, max_value=4),
    st.integers(0, 2**32),
)
def test_pack_then_unpack_is_identity(width: int, groups: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    top = 2**width if width < 64 else 2**64
    words = rng.integers(0, top, size=64 * groups, dtype=np.uint64, endpoint=False)
    blob = pack(words, width)
    assert len(blob) == packed_size(words.size, width)
    assert np.array_equal(unpack(blob, width, words.size), words)


def test_layout_is_little_endian_bit_stream() -> None:
    words = np.zeros(64, dtype=np.uint64)
    words[0], words[1] = 0b101, 0b11
    blob = pack(words, 3)
    # bits: word0 = 1,0,1 then word1 = 1,1,0 → 0b00011101 in the first byte
    assert blob[0] == 0b00011101 and not any(blob[1:])


def test_unpack_refuses_wrong_sizes() -> None:
    with pytest.raises(ValueError):
        unpack(b"\x00" * 47, 47, 64 * 2)
