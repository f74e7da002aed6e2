import numpy as np
import pytest
import tenseal.sealapi as sealapi

from he_agg.backend import encrypt_vector
from he_agg.crs import common_reference_polynomial
from he_agg.errors import CommitmentError, MismatchError
from he_agg.params import DEFAULT
from he_agg.seal_codec import SealCiphertext, ciphertext_to_bytes
from keys import keygen
from keys.committee import CommitteeSetup
from tests.helpers import summed_secret_key

P = DEFAULT


def test_public_key_share_round_trip_and_commitment() -> None:
    crs = common_reference_polynomial(P, "f")
    share = keygen.gen_public_key_share(keygen.gen_secret_share(P, 1), crs, P)
    back = keygen.PublicKeyShare.from_bytes(share.to_bytes(P), P)
    assert back.member == 1 and np.array_equal(back.words, share.words)
    commitment = keygen.commit(share, P, "f", 0)
    keygen.verify_reveal(commitment, back, P, "f", 0)
    other = keygen.gen_public_key_share(keygen.gen_secret_share(P, 1), crs, P)
    with pytest.raises(CommitmentError):
        keygen.verify_reveal(commitment, other, P, "f", 0)
    with pytest.raises(CommitmentError):
        keygen.verify_reveal(commitment, share, P, "f", 1)  # another epoch


def test_share_from_another_parameter_set_is_refused() -> None:
    crs = common_reference_polynomial(P, "f")
    blob = bytearray(keygen.gen_public_key_share(keygen.gen_secret_share(P, 1), crs, P).to_bytes(P))
    blob[5] ^= 1
    with pytest.raises(MismatchError):
        keygen.PublicKeyShare.from_bytes(bytes(blob), P)


def test_collective_key_is_a_seal_public_key_for_the_summed_secret(
    committee: CommitteeSetup,
) -> None:
    ctx = committee.public.seal
    # SEAL accepts the key we assembled …
    ctx.load(sealapi.PublicKey, ciphertext_to_bytes(committee.public.public_key))
    # … and what it encrypts decrypts under s = Σ s_i (test-only reconstruction).
    values = np.linspace(-1, 1, P.slots)
    words = encrypt_vector(values, committee.public)
    decryptor = sealapi.Decryptor(ctx.context, summed_secret_key(committee))
    loaded = ctx.load(
        sealapi.Ciphertext,
        ciphertext_to_bytes(SealCiphertext(ctx.data_parms_id, True, words[0], P.scale)),
    )
    plain = sealapi.Plaintext()
    decryptor.decrypt(loaded, plain)
    encoder = sealapi.CKKSEncoder(ctx.context)
    slots = np.asarray(encoder.decode_complex(plain))
    decoded = np.concatenate([slots.real, slots.imag])
    assert np.abs(decoded - values).max() < 1e-9
