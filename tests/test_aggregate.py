import numpy as np
import pytest
import tenseal.sealapi as sealapi

from he_agg.aggregate import RunningSum, aggregate_uploads
from he_agg.envelope import Upload, encode_upload
from he_agg.errors import MismatchError
from he_agg.params import derive_parameters
from he_agg.seal_codec import SealCiphertext, ciphertext_from_bytes, ciphertext_to_bytes
from he_agg.seal_context import save_bytes, seal_context
from tests.helpers import random_words

P = derive_parameters("aggregate-test", proofs=False)  # envelopes without proofs


def _seal_sum(words: list[np.ndarray]) -> np.ndarray:
    """Add the same ciphertexts with SEAL's Evaluator (what TenSEAL's + calls)."""
    ctx = seal_context(P)
    evaluator = sealapi.Evaluator(ctx.context)
    out = []
    for index in range(words[0].shape[0]):
        loaded = [
            ctx.load(
                sealapi.Ciphertext,
                ciphertext_to_bytes(SealCiphertext(ctx.data_parms_id, True, w[index], P.scale)),
            )
            for w in words
        ]
        total = sealapi.Ciphertext()
        evaluator.add_many(loaded, total)
        out.append(ciphertext_from_bytes(save_bytes(total)).data)
    return np.stack(out)


def test_sum_of_envelopes_is_bit_identical_to_seal_addition() -> None:
    words = [random_words(P.data_primes, (2, 2), P.poly_degree, seed) for seed in range(7)]
    blobs = [encode_upload(Upload("f", 1, f"c{i}", P.scale, w), P) for i, w in enumerate(words)]
    ours = aggregate_uploads(blobs, P, federation="f", round=1)
    assert np.array_equal(ours, _seal_sum(words))


def test_lazy_reduction_matches_eager_reduction_past_the_budget() -> None:
    words = [random_words(P.data_primes, (1, 2), P.poly_degree, seed) for seed in range(9)]
    running = RunningSum(P, 1)
    running._budget = 3  # force several reductions on the way
    for w in words:
        running.add(w)
    primes = np.array(P.data_primes, dtype=object).reshape(1, 1, -1, 1)
    exact = (sum(w.astype(object) for w in words) % primes).astype(np.uint64)
    assert np.array_equal(running.result(), exact)
    assert running.added == 9


def test_shape_mismatch_and_empty_rounds_are_refused() -> None:
    running = RunningSum(P, 2)
    with pytest.raises(MismatchError):
        running.add(random_words(P.data_primes, (1, 2), P.poly_degree))
    with pytest.raises(MismatchError):
        aggregate_uploads([], P)
