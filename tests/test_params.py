import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tenseal.sealapi as sealapi
from typer.testing import CliRunner

from clients.cli import app
from he_agg import noise, ntt
from he_agg.backend import encrypt_vector
from he_agg.combine import lagrange_coefficient
from he_agg.encoding import decode_words
from he_agg.errors import ParameterError
from he_agg.modarith import find_ntt_primes, mul_mod_shoup, shoup, sum_rns
from he_agg.params import (
    DEFAULT,
    FLOOD_MARGIN_BITS,
    HE_STANDARD_MAX_BITS,
    SECURITY_MARGIN_BITS,
    ParameterSet,
    derive_parameters,
    explain,
)
from he_agg.sampling import flooding_noise_rns
from he_agg.seal_codec import SealCiphertext, ciphertext_to_bytes, plaintext_from_bytes
from he_agg.seal_context import save_bytes, seal_context
from keys.committee import CommitteeSetup
from tests.helpers import summed_secret_key

P = DEFAULT


def _lift(residues: npt.NDArray[np.uint64], primes: tuple[int, ...]) -> list[int]:
    """Residues (L, N) → the centred integers they stand for (CRT, Python integers)."""
    q = math.prod(primes)
    out = []
    for column in residues.T:
        parts = zip(column, primes, strict=True)
        value = sum(int(r) * (q // p) * pow(q // p, -1, p) for r, p in parts) % q
        out.append(value - q if value > q // 2 else value)
    return out


def _with(**changes: object) -> ParameterSet:
    fields = {f.name: getattr(P, f.name) for f in dataclasses.fields(P) if f.init}
    fields.update(changes)
    return ParameterSet(**fields)


def _words(plain: Any) -> npt.NDArray[np.uint64]:
    """A SEAL plaintext's NTT-form words, (L, N)."""
    return plaintext_from_bytes(save_bytes(plain)).data.reshape(len(P.data_primes), -1)


def _small_coefficients(plain: Any) -> npt.NDArray[np.int64]:
    """Centred coefficients of a plaintext known to be far below the first prime."""
    q = P.data_primes[0]
    coeffs = ntt.inverse(_words(plain)[0], q).astype(np.int64)
    return np.where(coeffs > q // 2, coeffs - q, coeffs)


def _big_coefficients(plain: Any) -> list[int]:
    """Centred integer coefficients of a plaintext, rebuilt from every prime (CRT)."""
    words, q = _words(plain), P.data_modulus
    total = np.zeros(P.poly_degree, dtype=object)
    for j, prime in enumerate(P.data_primes):
        lift = (q // prime) * pow(q // prime, -1, prime)
        total = total + ntt.inverse(words[j], prime).astype(object) * lift
    return [int(c) % q - q if int(c) % q > q // 2 else int(c) % q for c in total]


def _exact_encoding(slots: npt.NDArray[np.complex128], scale: float) -> list[float]:
    """Δ·σ⁻¹(z) at 200 bits: SEAL's slot j is m(ω^(3^j)), ω = e^(iπ/N)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 200
    n, size = P.poly_degree, 2 * P.poly_degree
    spread = [mpmath.mpc(0)] * size
    position = 1
    for z in slots:
        spread[position] = mpmath.mpc(float(z.real), float(z.imag))
        spread[size - position] = mpmath.mpc(float(z.real), -float(z.imag))
        position = position * 3 % size
    bits = size.bit_length() - 1
    values = [spread[int(format(i, f"0{bits}b")[::-1], 2)] for i in range(size)]
    length = 2
    while length <= size:  # radix-2 inverse DFT: m_i = (1/N)·Σ_k Z_k·ω^(-ik)
        step = mpmath.expjpi(mpmath.mpf(-2) / length)
        twiddles = [mpmath.mpc(1)]
        for _ in range(length // 2 - 1):
            twiddles.append(twiddles[-1] * step)
        for start in range(0, size, length):
            for k, w in enumerate(twiddles):
                u, v = values[start + k], values[start + k + length // 2] * w
                values[start + k], values[start + k + length // 2] = u + v, u - v
        length *= 2
    factor = mpmath.mpf(scale) / n
    return [float(values[i].real * factor) for i in range(n)]


def _largest_client_block(seed: int = 0) -> npt.NDArray[np.float64]:
    """N reals at ±V/K_max: the largest values one client may encode."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], P.slots) * P.client_value_bound


def _seal_keys() -> tuple[Any, Any, Any]:
    ctx = seal_context(P)
    keygen = sealapi.KeyGenerator(ctx.context)
    public = sealapi.PublicKey()
    keygen.create_public_key(public)
    return ctx, keygen.secret_key(), public


def _fresh_zero_noise(count: int) -> npt.NDArray[np.int64]:
    """c0 + c1·s of the sum of ``count`` fresh SEAL encryptions of zero (one key)."""
    ctx, secret, public = _seal_keys()
    encryptor = sealapi.Encryptor(ctx.context, public)
    total = sealapi.Ciphertext()
    encryptor.encrypt_zero(total)
    for _ in range(count - 1):
        more = sealapi.Ciphertext()
        encryptor.encrypt_zero(more)
        sealapi.Evaluator(ctx.context).add_inplace(total, more)
    plain = sealapi.Plaintext()
    sealapi.Decryptor(ctx.context, secret).decrypt(total, plain)
    return _small_coefficients(plain)


# ---- the rules ------------------------------------------------------------------------
def test_security_table_matches_seal() -> None:
    for n, bits in HE_STANDARD_MAX_BITS.items():
        assert sealapi.CoeffModulus.MaxBitCount(n, sealapi.SEC_LEVEL_TYPE.TC128) == bits


def test_default_is_what_the_derivation_gives_and_meets_every_rule() -> None:
    assert derive_parameters() == P and P.proofs  # proofs of well-formed uploads by default
    P.validate()
    assert P.sigma_flood >= P.required_flood_sigma()
    assert P.upload_bytes_per_parameter() <= 33  # 3 primes: the price of the proofs' slack
    trusted = derive_parameters(proofs=False)  # benchmarks and trusted clients only
    assert trusted.upload_bytes_per_parameter() <= 24 and trusted.fingerprint != P.fingerprint


def test_derivation_picks_the_smallest_ring_that_fits() -> None:
    # p = 30 with V = 2^40 and both margins needs log2 q = 109.3 at N = 4096 (108 allowed).
    assert P.poly_degree == 8192
    assert derive_parameters("small", precision_bits=28, proofs=False).poly_degree == 4096
    assert derive_parameters("few", k_max=8, value_bits=12, proofs=False).poly_degree == 4096
    # with proofs the flooding must also hide what an accepted proof allows: 2^88
    assert derive_parameters("few", k_max=8, value_bits=12).poly_degree == 8192


def test_derivation_uses_no_more_data_bits_than_needed() -> None:
    smaller_bits = tuple(b - 1 for b in P.prime_bits)
    with pytest.raises(ParameterError):
        _with(data_primes=find_ntt_primes(P.poly_degree, smaller_bits))


def test_flooding_below_the_rule_is_refused() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(flood_bits=math.floor(math.log2(P.required_flood_sigma())))
    assert caught.value.rule == "flooding"


def test_statistical_security_below_40_is_refused() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(stat_security=39)
    assert caught.value.rule == "flooding"


def test_too_many_modulus_bits_breaks_security() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(data_primes=find_ntt_primes(8192, (60, 60, 60, 60)))  # 240 + 17 > 218
    assert caught.value.rule == "security"


def test_non_ntt_prime_breaks_security() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(special_prime=65521)  # prime, but not ≡ 1 mod 16384
    assert caught.value.rule == "security"


def test_too_small_scale_breaks_precision() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(scale_bits=P.scale_bits - 1)
    assert caught.value.rule == "precision"


def test_too_large_value_bound_breaks_headroom() -> None:
    with pytest.raises(ParameterError) as caught:
        _with(value_bits=P.value_bits + 3, precision_bits=P.precision_bits + 3)
    assert caught.value.rule == "headroom"


def test_fingerprint_is_stable_and_changes_with_every_field() -> None:
    assert P.fingerprint == derive_parameters().fingerprint
    assert len(P.fingerprint) == 32
    variants = [_with(name="other"), _with(tau=512), _with(k_max=999)]
    assert len({P.fingerprint, *(v.fingerprint for v in variants)}) == 4


# ---- (a) fresh encryption, (c) the aggregate, (d) the collective key -----------------
def test_fresh_encryption_terms_match_an_independent_count() -> None:
    seal_path = derive_parameters(proofs=False)
    n, members, p = 8192, 8, seal_path.special_prime
    assert noise.key_error_term(n, members, p) == pytest.approx(n * members * 21 / p)
    assert noise.encryption_error_term(n, members, p) == pytest.approx(21 * (1 + n * members) / p)
    assert noise.mod_switch_rounding(n, members) == 0.5 + n * members / 2
    expected = 21 * (1 + 2 * n * members) / p + (n * members + 1) / 2
    assert seal_path.fresh_noise_bound() == pytest.approx(expected)


def test_proven_upload_terms_match_an_independent_count() -> None:
    """(f): he_agg.rlwe's fresh noise, and what an accepted proof of 256 ciphertexts allows:
    c1 = a·ū + ē with ‖ū‖ ≤ 2γ_u, ‖ē‖ ≤ 2γ_e, so ‖ū·e_pk + ē·s‖ ≤ N·n·(2γ_u·21 + 2γ_e)."""
    n, members = 8192, 8
    assert noise.proven_fresh_noise_bound(n, members) == 2 * n * members * 21 + 21
    masks = noise.proof_masks(n, noise.PROOF_GROUP)
    assert masks.gamma_u + 1 >= 2 * noise.PROOF_ROWS * n * masks.beta_u
    assert masks.gamma_e + 1 >= 2 * noise.PROOF_ROWS * n * masks.beta_e
    assert masks.beta_u <= noise.PROOF_GROUP and masks.beta_e <= noise.PROOF_GROUP * 21
    leak = n * members * (2 * masks.gamma_u * 21 + 2 * masks.gamma_e)
    assert noise.extracted_leak_bound(n, members, masks) == leak
    assert P.fresh_noise_bound() == max(leak, noise.proven_fresh_noise_bound(n, members))
    assert P.aggregate_noise_bound() == P.k_max * leak + (P.k_max + 1) / 2


def test_fresh_seal_encryption_noise_is_within_its_bound() -> None:
    measured = np.abs(_fresh_zero_noise(1)).max()
    bound = noise.fresh_noise_bound(P.poly_degree, 1, P.special_prime)  # one SEAL key
    assert 0 < measured <= bound


def test_aggregate_bound_adds_k_fresh_encryptions_and_their_rounding() -> None:
    fresh = P.fresh_noise_bound()
    assert P.aggregate_noise_bound() == pytest.approx(1000 * fresh + 1001 / 2)
    measured = np.abs(_fresh_zero_noise(4)).max()
    one_key = noise.fresh_noise_bound(P.poly_degree, 1, P.special_prime)
    assert measured <= noise.aggregate_noise_bound(4, one_key)


def test_collective_key_error_grows_with_members_and_bounds_real_noise(
    committee: CommitteeSetup,
) -> None:
    n, p = P.poly_degree, P.special_prime
    assert noise.key_error_term(n, 5, p) == pytest.approx(5 * noise.key_error_term(n, 1, p))
    ctx = committee.public.seal
    decryptor = sealapi.Decryptor(ctx.context, summed_secret_key(committee))
    words = encrypt_vector(np.zeros(P.slots), committee.public)[0]
    cipher = ctx.load(
        sealapi.Ciphertext, ciphertext_to_bytes(SealCiphertext(ctx.data_parms_id, True, words, 1.0))
    )
    plain = sealapi.Plaintext()
    decryptor.decrypt(cipher, plain)
    measured = np.abs(_small_coefficients(plain)).max()
    assert 0 < measured <= noise.fresh_noise_bound(n, len(committee.members), p)


# ---- (b) encoding ------------------------------------------------------------------------
def _encode_at(block: npt.NDArray[np.float64], scale: float) -> Any:
    """SEAL's CKKSEncoder on one block of N reals (complex packing) at ``scale``."""
    ctx = seal_context(P)
    out = sealapi.Plaintext()
    half = block.size // 2
    sealapi.CKKSEncoder(ctx.context).encode((block[:half] + 1j * block[half:]).tolist(), scale, out)
    return out


def test_encoding_rounding_is_half_a_unit_where_binary64_is_exact() -> None:
    scale, block = 2.0**30, np.sign(_largest_client_block(1))  # Δ·v = 2^30 ≪ 2^53
    exact = _exact_encoding(block[: P.slots // 2] + 1j * block[P.slots // 2 :], scale)
    encoded = _small_coefficients(_encode_at(block, scale))
    error = max(abs(int(a) - b) for a, b in zip(encoded, exact, strict=True))
    assert error <= noise.encoding_rounding() + noise.encoding_float_error(P.poly_degree, scale, 1)
    assert error > 0.4  # some coefficient does round by nearly ½


def test_encoding_float_error_at_the_largest_allowed_value_is_within_its_bound() -> None:
    block = _largest_client_block()
    ctx = seal_context(P)
    encoder = sealapi.CKKSEncoder(ctx.context)
    plain = _encode_at(block, P.scale)
    exact = _exact_encoding(block[: P.slots // 2] + 1j * block[P.slots // 2 :], P.scale)
    error = max(abs(a - b) for a, b in zip(_big_coefficients(plain), exact, strict=True))
    bound = noise.encoding_float_error(P.poly_degree, P.scale, P.client_value_bound)
    assert 2**20 < error <= bound  # far above ½: binary64, not rounding, dominates here
    decoded = decode_words(_words(plain), ctx, encoder)
    decode_bound = noise.decoded_float_error(P.poly_degree, P.scale, P.client_value_bound, 1)
    assert np.abs(decoded - block).max() <= decode_bound


# ---- (e) threshold decryption ------------------------------------------------------------
def test_lagrange_interpolation_of_the_shares_is_exact(committee: CommitteeSetup) -> None:
    assert noise.lagrange_error() == 0
    primes = P.data_primes
    secret = sum_rns([m.secret.ntt_form(primes) for m in committee.members], primes)
    for subset in [(1, 2, 3), (2, 4, 5)]:
        parts = []
        for k in subset:
            words = committee.members[k - 1].threshold_share.words
            parts.append(
                np.stack(
                    [
                        mul_mod_shoup(words[j], shoup(lagrange_coefficient(k, subset, q), q), q)
                        for j, q in enumerate(primes)
                    ]
                )
            )
        assert np.array_equal(sum_rns(parts, primes), secret)  # Σ λ_k·S_k = s, no error


def test_flooding_tails_bound_the_sum_of_t_members_and_enter_the_headroom() -> None:
    t = 3
    primes = P.data_primes
    draws = [
        flooding_noise_rns((P.poly_degree,), P.flood_bits, noise.FLOOD_TAIL, primes)
        for _ in range(t)
    ]
    lifted = [_lift(d, primes) for d in draws]
    total = np.array([float(sum(values)) for values in zip(*lifted, strict=True)])
    tail = noise.flooding_tail(t, P.sigma_flood) * (1 + 2.0 ** -(P.flood_bits // 2))
    assert tail >= t * 12 * P.sigma_flood
    assert np.abs(total).max() <= tail
    assert np.abs(total).max() > P.sigma_flood  # the noise is as wide as σ says
    counted = P.decryption_noise_bound() - P.aggregate_noise_bound()
    assert counted >= noise.flooding_tail(P.committee_max, P.sigma_flood)


# ---- margins -------------------------------------------------------------------------------
def test_statistical_security_at_the_rule_is_at_least_40_plus_twice_the_margin() -> None:
    independent = 2 * math.log2(P.sigma_flood / (math.sqrt(12 * P.tau) * P.aggregate_noise_bound()))
    assert P.statistical_security_at_rule == pytest.approx(independent)
    assert P.statistical_security_at_rule >= 40 + 2 * FLOOD_MARGIN_BITS
    assert P.flooding_margin_bits >= FLOOD_MARGIN_BITS
    assert P.flooding_margin_bits == pytest.approx((P.statistical_security_at_rule - 40) / 2)


def test_modulus_sits_the_stated_bits_below_the_128_bit_bound() -> None:
    log_q = math.log2(math.prod((*P.data_primes, P.special_prime)))
    assert P.security_margin_bits == pytest.approx(HE_STANDARD_MAX_BITS[P.poly_degree] - log_q)
    assert P.security_margin_bits >= SECURITY_MARGIN_BITS
    assert seal_context(P).context.parameters_set()  # SEAL's own 128-bit check agrees


def test_headroom_and_precision_margins_are_positive_and_counted() -> None:
    budget = P.budget()
    assert budget.coefficient_bound() == pytest.approx(
        math.sqrt(2) * P.scale * P.value_bound + P.decryption_noise_bound()
    )
    assert P.headroom_bits > 0 and P.precision_margin_bits >= 0
    assert P.data_modulus / 2 > budget.coefficient_bound()
    assert P.expected_max_error() <= 2.0 ** (P.value_bits - P.precision_bits)


@pytest.mark.parametrize(
    "rules",
    [
        {},
        {"k_max": 8, "committee_max": 3, "value_bits": 12},
        {"k_max": 10, "committee_max": 5, "value_bits": 8, "precision_bits": 36},
        {"k_max": 100, "value_bits": 30, "precision_bits": 37},
    ],
)
def test_every_derived_set_keeps_the_stated_margins(rules: dict[str, int]) -> None:
    chosen = derive_parameters("margins", **rules)
    assert chosen.flooding_margin_bits >= FLOOD_MARGIN_BITS
    assert chosen.statistical_security_at_rule >= 40 + 2 * FLOOD_MARGIN_BITS
    assert chosen.security_margin_bits >= SECURITY_MARGIN_BITS
    assert chosen.headroom_bits > 0 and chosen.precision_margin_bits >= 0


# ---- the supported range, describe() and --explain ---------------------------------------
def test_precision_finer_than_binary64_guarantees_is_refused() -> None:
    with pytest.raises(ParameterError, match="binary64") as caught:
        derive_parameters("too-fine", precision_bits=40)
    assert caught.value.rule == "precision"


def test_default_supports_a_million_samples_of_values_up_to_a_thousand() -> None:
    assert P.client_value_bound >= 10**6 * 10**3
    assert P.k_max == 1000
    described = P.describe()
    assert described["supported_range"]["max_abs_x_at_1e6_samples"] >= 1000  # type: ignore[index]
    margins = described["margins"]
    assert margins["statistical_security_at_rule"] >= 42  # type: ignore[index]
    assert margins["bits_below_128_bit_bound"] >= 1  # type: ignore[index]


def test_explain_lists_every_term_and_margin() -> None:
    rows = explain(P)
    names = [name for name, _, _ in rows]
    for tag in ("(f)", "(b)", "(c)", "(e)", "flooding:", "precision:", "headroom:"):
        assert any(name.startswith(tag) for name in names), tag
    seal_path = [name for name, _, _ in explain(derive_parameters(proofs=False))]
    for tag in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        assert any(name.startswith(tag) for name in seal_path), tag
    assert not any(name.startswith("(f)") for name in seal_path)
    values = dict((name, value) for name, _, value in rows)
    assert values["(e) Lagrange interpolation"] == "0 (exact)"
    assert values["(c) B_ct, K_max clients"] == f"2^{math.log2(P.aggregate_noise_bound()):.2f}"


def test_cli_params_explain_prints_the_derivation_and_margins() -> None:
    result = CliRunner().invoke(app, ["params", "--explain"])
    assert result.exit_code == 0, result.output
    assert "B_ct" in result.output and "what an accepted proof allows" in result.output
    unproven = CliRunner().invoke(app, ["params", "--explain", "--no-proofs"])
    assert "mod-switch rounding" in unproven.output
    assert f"{P.statistical_security_at_rule:.2f} bits" in result.output
    assert f"{P.security_margin_bits:.2f} bits" in result.output
    plain = CliRunner().invoke(app, ["params"])
    assert '"statistical_security_at_rule"' in plain.output
