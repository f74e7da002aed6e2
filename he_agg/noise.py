"""Every noise term of a round, each a named function with its derivation.

Notation: N ring degree, n committee members (the secret is s = Σ s_i, so ‖s‖∞ ≤ n),
p SEAL's special prime, K clients, t members in a decryption set, Δ the scale, V the
bound on every real of the aggregate (so V/K on one client's), B_e = 21 a bound on every
small error polynomial (SEAL's centred binomial noise and our 6σ-clipped Gaussian).
Terms in the *coefficient* domain are integers in the decrypted plaintext; terms in the
*slot* domain are decoded errors in value units.

**(a) Fresh public-key encryption** (SEAL's ``Encryptor`` with the collective key
pk = (−a·s + e_pk, a)). SEAL encrypts zero at the key level, c = (u·pk0 + e0, u·pk1 + e1)
with u ternary, so c0 + c1·s = u·e_pk + e0 + e1·s, then divides by p with rounding. Each
part, after the division:

* ``key_error_term``: ‖u·e_pk‖∞/p ≤ N·n·B_e/p. This is **(d)**, the collective key's
  error: e_pk = Σ e_i over n members, ‖e_pk‖∞ ≤ n·B_e.
* ``encryption_error_term``: ‖e0 + e1·s‖∞/p ≤ B_e·(1 + N·n)/p.
* ``mod_switch_rounding``: c′_j = (c_j − r_j)/p with ‖r_j‖∞ ≤ p/2, which leaves
  −(r0 + r1·s)/p: at most ½ + N·n/2. It dominates, and it does not shrink with p.

**(b) CKKS encoding.** SEAL's ``CKKSEncoder`` computes Δ·m = Δ·σ⁻¹(z) with a
double-precision inverse FFT, then rounds each coefficient to an integer. Two errors:

* ``encoding_rounding``: ½ per coefficient per encoding, the only error an exact encoder
  would make.
* ``encoding_float_error``: the FFT's own error. By Parseval over the canonical
  embedding ‖m‖₂ ≤ √2·v for complex slots whose real and imaginary parts are at most v,
  and a radix-2 FFT in binary64 is norm-wise accurate to ε = log₂N·η/(1 − log₂N·η) with
  η = μ + γ₄(√2 + μ), μ the twiddle error (Higham, *Accuracy and Stability of Numerical
  Algorithms*, 2nd ed., Thm 24.2), plus one rounding for the scale. So ‖e‖∞ ≤ ‖e‖₂ ≤
  ε·√2·Δ·v. Measured against a 200-bit reference (``tests/test_params.py``) it is about
  2^-55.7 of Δ·v, 10 bits under the bound: 2^27.3 against 2^37.2 per client for the
  default set (Δ = 2^53, v = V/K ≈ 2^30).

  The issue's 2^33 has the right size: at N = 4096, Δ = 2^70 and v = V/K = 2^10 the
  bound is 2^34 and the measurement 2^25 per client, above B_ct ≈ 2^24. It does **not**
  enter the flooding rule, for this reason. The rule bounds the part of the decrypted
  plaintext that a simulator, given the round's output, cannot compute; that part must
  be hidden because it depends on the secret key (Li–Micciancio). The round's output is
  Σ_k Encode(n_k·x_k), each client's deterministic, public encoding of its own update,
  just as secure aggregation sums each client's fixed-point encoding. The encoding error
  is a function of that output's inputs, not of s, u or e, so knowing it reveals nothing
  about the key. What the rule must count is the rounding an *exact* encoder would leave
  if the output were read as Encode(Σ n_k·x_k); that conservative term, (K+1)·½, is in
  B_ct. Counting SEAL's float error under the rule instead would need
  σ ≥ √(12τ)·2^(s/2)·ε·√2·Δ·V, and the decoded flooding error 4·σ·√(N/2)·√t/Δ would
  then be at least 2^-9.6·V at N = 8192 (2^-10.2 at 4096) whatever Δ and q are, since
  both sides scale with Δ: about 10 bits of precision in place of 30. ``describe()`` reports the
  statistical distance that the flooding gives this error all the same
  (``residue_security_bits``); an exact (double-double or integer) encoder in
  ``he_agg.encoding`` would make it ½ per coefficient. The float error is counted in the
  precision and headroom rules.

**(c) The aggregate of K_max clients**: ``aggregate_noise_bound`` = K·B_fresh + (K+1)·½.
Ciphertext addition mod q is exact, so the bounds add.

**(e) Threshold decryption.** Member k sends d_k = λ_k·(c1 ⊙ S_k) + e_k, each Shamir share
S_k and Lagrange coefficient λ_k taken mod each data prime q_j, a field. Σ_k λ_k·S_k ≡ s
(mod q_j) holds exactly for any t distinct members (interpolating a degree t−1 polynomial
at 0), so Σ_k d_k = c1·s + Σ_k e_k mod q: ``lagrange_error`` is 0 (Shamir sharing over
the integers, by contrast, needs the n!-scaling trick, which multiplies the noise). The t
flooding terms
are clipped at 12σ each: ``flooding_tail`` = t·12σ is counted in the headroom rule, and
their sum, Gaussian with standard deviation √t·σ per coefficient, in the precision rule.

**Decoded (slot) errors**, counted in the precision rule: flooding
``decoded_flooding_error`` = 4·σ·√(N/2)·√t/Δ (the measured expected maximum over N
reals, DESIGN §4); ciphertext noise N·B_ct/Δ (a slot is Σ_i e_i·ζ^i, at most ‖e‖₁);
float error √N·ε·√2·V for the K encodings (‖e‖₁ ≤ √N·‖e‖₂, and the per-client bounds
add to V) plus the same again for SEAL's decoder, plus K·N/(2Δ) for the rounding.

``Budget`` adds the terms up for the headroom and precision rules; ``describe`` and
``explain`` render a parameter set's numbers and margins for people (``he-agg params``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from he_agg.sampling import KEY_SIGMA

if TYPE_CHECKING:
    from he_agg.params import ParameterSet

__all__ = [
    "FLOOD_SPREAD",
    "FLOOD_TAIL",
    "NOISE_BOUND",
    "PROOF_GROUP",
    "PROOF_ROWS",
    "PROOF_SHIFT_FAILURE_BITS",
    "Budget",
    "ProofMasks",
    "aggregate_noise_bound",
    "decoded_ciphertext_error",
    "decoded_float_error",
    "decoded_flooding_error",
    "describe",
    "encoding_float_error",
    "encoding_rounding",
    "encryption_error_term",
    "explain",
    "extracted_leak_bound",
    "fft_relative_error",
    "flooding_tail",
    "fresh_noise_bound",
    "key_error_term",
    "lagrange_error",
    "message_coefficient_bound",
    "mod_switch_rounding",
    "proof_masks",
    "proven_client_bound",
    "proven_fresh_noise_bound",
    "render_explanation",
    "rule_sigma",
    "statistical_security",
]

NOISE_BOUND = 21  # B_e: ‖e‖∞ for SEAL's CBD noise and our 6σ-clipped Gaussian (σ = 3.19)
FLOOD_TAIL = 12  # flooding noise is clipped at 12σ (mass beyond it is below 2^-100)
FLOOD_SPREAD = 4  # measured max decoded flooding error, in slot standard deviations
_UNIT_ROUNDOFF = 2.0**-53  # binary64
_TWIDDLE_ERROR = 2.0**-52  # μ: SEAL's roots of unity, each within an ulp or two
_SAMPLES_EXAMPLE = 10**6  # describe(): the largest |x| a client of this many samples may send


def key_error_term(poly_degree: int, members: int, special_prime: int) -> float:
    """(d) ‖u·e_pk‖∞/p: the collective key's error, n members' Gaussians summed."""
    return poly_degree * members * NOISE_BOUND / special_prime


def encryption_error_term(poly_degree: int, members: int, special_prime: int) -> float:
    """(a) ‖e0 + e1·s‖∞/p: the encryptor's own errors, e1 times an n-member secret."""
    return NOISE_BOUND * (1 + poly_degree * members) / special_prime


def mod_switch_rounding(poly_degree: int, members: int) -> float:
    """(a) ‖(r0 + r1·s)/p‖∞ ≤ ½ + N·n/2: SEAL's division by the special prime."""
    return 0.5 + poly_degree * members / 2


def fresh_noise_bound(poly_degree: int, members: int, special_prime: int) -> float:
    """(a) B_fresh: worst case of c0 + c1·s for one fresh encryption of zero."""
    return (
        key_error_term(poly_degree, members, special_prime)
        + encryption_error_term(poly_degree, members, special_prime)
        + mod_switch_rounding(poly_degree, members)
    )


# ---- (f) proven uploads (he_agg.rlwe encryption, he_agg.wellformed proofs; PROOFS.md) ----
PROOF_ROWS = 136  # m: binary rows; a cheat succeeds w.p. ≤ n·2^-m ≤ 2^-128 per hash query (n ≤ 256)
PROOF_GROUP = 256  # at most this many ciphertexts per proof (an upload carries several)
PROOF_SHIFT_FAILURE_BITS = 40  # an honest shift exceeds β with probability ≤ 2^-40 per proof


@dataclass(frozen=True)
class ProofMasks:
    """β (a public bound on every coefficient of Σ_i C_ji·x_i) and γ = 2^k − 1 (the mask
    width) for the u and e parts of one proof."""

    beta_u: int
    beta_e: int
    gamma_u: int
    gamma_e: int


def _bernstein(count: int, variance: float, bound: float, failure: float) -> int:
    """t with P(|sum of ``count`` independent centred terms| > t) ≤ ``failure`` (Bernstein's
    inequality), each term bounded by ``bound`` with the given variance; never above the
    worst case count·bound."""
    log_term = math.log(2 / failure)
    b = bound / 3
    t = b * log_term + math.sqrt((b * log_term) ** 2 + 2 * count * variance * log_term)
    return max(1, min(math.ceil(t), math.ceil(count * bound)))


def proof_masks(poly_degree: int, count: int, rows: int = PROOF_ROWS) -> ProofMasks:
    """β and γ for ``count`` ciphertexts: β holds for every row and coefficient except with
    probability 2^-PROOF_SHIFT_FAILURE_BITS (the prover then restarts); γ ≥ 2·m·N·β keeps
    each part with probability ≥ e^-1/2. A term C_ji·u_i[k] is 0 w.p. ½, else uniform
    ternary (variance ⅓ overall); C_ji·e_i[k] has variance σ²/2 and |·| ≤ B_e."""
    failure = 2.0**-PROOF_SHIFT_FAILURE_BITS / (2 * rows * poly_degree)
    beta_u = _bernstein(count, 1 / 3, 1, failure)
    beta_e = _bernstein(count, KEY_SIGMA**2 / 2, NOISE_BOUND, failure)

    def gamma(beta: int) -> int:
        return (1 << (2 * rows * poly_degree * beta).bit_length()) - 1

    return ProofMasks(beta_u, beta_e, gamma(beta_u), gamma(beta_e))


def proven_fresh_noise_bound(poly_degree: int, members: int) -> float:
    """(f) B_fresh of he_agg.rlwe's encryption mod q (no special prime, no division):
    ‖u·e_pk + e0 + e1·s‖∞ ≤ N·n·B_e + B_e + N·n·B_e."""
    return float(2 * poly_degree * members * NOISE_BOUND + NOISE_BOUND)


def extracted_leak_bound(poly_degree: int, members: int, masks: ProofMasks) -> float:
    """(f) What an accepted proof guarantees of an adversarial c1: an exact opening
    c1 = a·ū + ē with ‖ū‖∞ ≤ 2γ_u, ‖ē‖∞ ≤ 2γ_e, so c1·s = −ū·b + (ū·e_pk + ē·s) with b
    public and ‖ū·e_pk + ē·s‖∞ ≤ N·n·(2γ_u·B_e + 2γ_e): the key-dependent part the
    flooding must hide (c0 may be anything; it is known to its sender)."""
    return float(poly_degree * members * (2 * masks.gamma_u * NOISE_BOUND + 2 * masks.gamma_e))


def proven_client_bound(poly_degree: int, members: int) -> float:
    """(f) The key-dependent noise one client can put in a decryption when proofs are
    required: an honest encryption's, or the most an accepted proof of the largest group
    allows, whichever is larger."""
    masks = proof_masks(poly_degree, PROOF_GROUP)
    return max(
        proven_fresh_noise_bound(poly_degree, members),
        extracted_leak_bound(poly_degree, members, masks),
    )


def encoding_rounding() -> float:
    """(b) ‖round(Δ·m) − Δ·m‖∞ for an exact encoder: ½ per coefficient."""
    return 0.5


def fft_relative_error(poly_degree: int) -> float:
    """ε: norm-wise relative error of SEAL's binary64 FFT of length N, scale included."""
    u = _UNIT_ROUNDOFF
    gamma4 = 4 * u / (1 - 4 * u)
    eta = _TWIDDLE_ERROR + gamma4 * (math.sqrt(2) + _TWIDDLE_ERROR)
    stages = math.log2(poly_degree) * eta
    return stages / (1 - stages) + u


def encoding_float_error(poly_degree: int, scale: float, value: float) -> float:
    """(b) ‖e‖∞ ≤ ε·√2·Δ·v: SEAL's float error encoding reals of magnitude ≤ v."""
    return fft_relative_error(poly_degree) * math.sqrt(2) * scale * value


def aggregate_noise_bound(k_max: int, fresh: float) -> float:
    """(c) B_ct = K·B_fresh + (K+1)·½: K fresh encryptions and the encodings' rounding."""
    return k_max * fresh + (k_max + 1) * encoding_rounding()


def lagrange_error() -> float:
    """(e) Σ λ_k·S_k ≡ s mod each data prime, exactly: Lagrange adds no noise."""
    return 0.0


def flooding_tail(threshold: int, sigma: float) -> float:
    """(e) ‖Σ_k e_k‖∞ ≤ t·12σ: t flooding terms, each clipped at 12σ."""
    return threshold * FLOOD_TAIL * sigma


def message_coefficient_bound(value_bound: float, scale: float) -> float:
    """‖Δ·m‖∞ ≤ Δ·‖m‖₂ ≤ √2·Δ·V for complex slots with |Re|, |Im| ≤ V."""
    return math.sqrt(2) * scale * value_bound


def rule_sigma(tau: int, stat_security: float, noise: float) -> float:
    """The flooding rule: σ ≥ √(12τ)·2^(s/2)·B (OpenFHE, after Li et al., CRYPTO 2022)."""
    return math.sqrt(12 * tau) * 2 ** (stat_security / 2) * noise


def statistical_security(sigma: float, tau: int, noise: float) -> float:
    """The s at which σ meets the rule exactly: 2·log₂(σ / (√(12τ)·B))."""
    return 2 * math.log2(sigma / (math.sqrt(12 * tau) * noise))


def decoded_flooding_error(sigma: float, poly_degree: int, threshold: int, scale: float) -> float:
    """Slot error from t flooding terms: 4·σ·√(N/2)·√t/Δ (DESIGN §4, measured)."""
    return FLOOD_SPREAD * sigma * math.sqrt(poly_degree / 2) * math.sqrt(threshold) / scale


def decoded_ciphertext_error(poly_degree: int, noise: float, scale: float) -> float:
    """Slot error from coefficient noise ≤ B: at most ‖e‖₁/Δ ≤ N·B/Δ."""
    return poly_degree * noise / scale


def decoded_float_error(poly_degree: int, scale: float, value_bound: float, k_max: int) -> float:
    """Slot error of binary64 arithmetic: K encodings and one decoding, each ≤ √N·ε·√2·V,
    plus the encodings' rounding K·N/(2Δ)."""
    eps = fft_relative_error(poly_degree)
    per_side = math.sqrt(poly_degree) * eps * math.sqrt(2) * value_bound
    return 2 * per_side + k_max * poly_degree * encoding_rounding() / scale


@dataclass(frozen=True)
class Budget:
    """The terms of one round added up, for the headroom and precision rules.

    ``aggregate`` is B_ct; ``threshold`` the largest decryption set (t ≤ committee size).
    """

    poly_degree: int
    scale: float
    sigma: float
    value_bound: float
    aggregate: float
    k_max: int
    threshold: int

    def float_coefficients(self) -> float:
        """‖Σ_k e_k‖∞ of SEAL's binary64 encoding, K clients each at V/K: ε·√2·Δ·V."""
        per_client = self.value_bound / self.k_max
        return self.k_max * encoding_float_error(self.poly_degree, self.scale, per_client)

    def noise_coefficients(self) -> float:
        """Every noise term of a decrypted coefficient: B_ct, float error, t·12σ tails."""
        tails = flooding_tail(self.threshold, self.sigma)
        return self.aggregate + self.float_coefficients() + tails

    def coefficient_bound(self) -> float:
        """‖decrypted plaintext‖∞ ≤ √2·Δ·V + every noise term: the headroom rule's left side."""
        message = message_coefficient_bound(self.value_bound, self.scale)
        return message + self.noise_coefficients()

    def decoded_error(self) -> float:
        """The precision rule's left side: flooding, ciphertext noise, binary64 error."""
        n, scale = self.poly_degree, self.scale
        return (
            decoded_flooding_error(self.sigma, n, self.threshold, scale)
            + decoded_ciphertext_error(n, self.aggregate, scale)
            + decoded_float_error(n, scale, self.value_bound, self.k_max)
        )


def _bits(value: float) -> str:
    return "0 (exact)" if value == 0 else f"2^{math.log2(value):.2f}"


def describe(params: ParameterSet) -> dict[str, object]:
    """The set, its rule numbers, its margins and its supported range, JSON-ready."""
    return {
        "name": params.name,
        "N": params.poly_degree,
        "data_prime_bits": list(params.prime_bits),
        "data_primes": list(params.data_primes),
        "special_prime": params.special_prime,
        "log2_q_total": round(params.modulus_bits, 2),
        "scale": f"2^{params.scale_bits}",
        "sigma_flood": f"2^{params.flood_bits}",
        "sigma_flood_required": f"2^{math.log2(params.required_flood_sigma()):.2f}",
        "B_fresh": f"2^{math.log2(params.fresh_noise_bound()):.2f}",
        "B_ct": f"2^{math.log2(params.aggregate_noise_bound()):.2f}",
        "s": params.stat_security,
        "tau": params.tau,
        "K_max": params.k_max,
        "committee_max": params.committee_max,
        "V": f"2^{params.value_bits}",
        "expected_max_error": f"2^{math.log2(params.expected_max_error()):.2f}",
        "margins": {
            "statistical_security_at_rule": round(params.statistical_security_at_rule, 2),
            "flooding_margin_bits": round(params.flooding_margin_bits, 2),
            "bits_below_128_bit_bound": round(params.security_margin_bits, 2),
            "headroom_bits": round(params.headroom_bits, 2),
            "precision_margin_bits": round(params.precision_margin_bits, 2),
            "encoding_residue_security_bits": round(params.residue_security_bits, 2),
        },
        "supported_range": {
            "K_max": params.k_max,
            "max_abs_n_k_times_x": params.client_value_bound,
            "max_abs_x_at_1e6_samples": params.client_value_bound / _SAMPLES_EXAMPLE,
            "error_on_weighted_sum": params.expected_max_error(),
            "error_on_average": "error_on_weighted_sum · (1 + |x|) / Σ n_k",
        },
        "upload_bytes_per_param": params.upload_bytes_per_parameter(),
        "fingerprint": params.fingerprint.hex(),
    }


Row = tuple[str, str, str]  # (name, formula, value)


def _term_rows(params: ParameterSet) -> list[Row]:
    n, members, p = params.poly_degree, params.committee_max, params.special_prime
    eps = fft_relative_error(n)
    per_client = encoding_float_error(n, params.scale, params.client_value_bound)
    seal_path = [
        (
            "(a) encryption error (e0+e1·s)/p",
            "B_e·(1+N·n)/p",
            _bits(encryption_error_term(n, members, p)),
        ),
        ("(d) collective key error u·e_pk/p", "N·n·B_e/p", _bits(key_error_term(n, members, p))),
        ("(a) mod-switch rounding", "1/2 + N·n/2", _bits(mod_switch_rounding(n, members))),
        ("(a) B_fresh, one encryption", "the three above", _bits(params.fresh_noise_bound())),
    ]
    return [
        *(_proof_rows(params) if params.proofs else seal_path),
        ("(b) encoding rounding", "1/2 per coefficient", _bits(encoding_rounding())),
        ("(b) encoding float error, one client", f"ε·√2·Δ·V/K, ε = 2^{math.log2(eps):.2f}",
         _bits(per_client)),
        ("(c) B_ct, K_max clients", "K·B_fresh + (K+1)/2", _bits(params.aggregate_noise_bound())),
        ("(e) Lagrange interpolation", "Σ λ_k·S_k ≡ s mod q_j", _bits(lagrange_error())),
        ("(e) t flooding tails", "t·12σ", _bits(flooding_tail(members, params.sigma_flood))),
    ]  # fmt: skip


def _proof_rows(params: ParameterSet) -> list[Row]:
    n, members = params.poly_degree, params.committee_max
    masks = proof_masks(n, PROOF_GROUP)
    return [
        ("(f) he_agg.rlwe fresh noise", "2·N·n·B_e + B_e",
         _bits(proven_fresh_noise_bound(n, members))),
        (f"(f) proof masks, m = {PROOF_ROWS}, {PROOF_GROUP} ciphertexts", "γ_u, γ_e ≥ 2·m·N·β",
         f"2^{math.log2(masks.gamma_u + 1):.0f}, 2^{math.log2(masks.gamma_e + 1):.0f}"),
        ("(f) what an accepted proof allows", "N·n·(2γ_u·B_e + 2γ_e)",
         _bits(extracted_leak_bound(n, members, masks))),
        ("(f) B_fresh, one client", "the larger of the two", _bits(params.fresh_noise_bound())),
    ]  # fmt: skip


def _rule_rows(params: ParameterSet) -> list[Row]:
    n, t, scale = params.poly_degree, params.committee_max, params.scale
    budget = params.budget()
    target = 2.0**-params.precision_bits * params.value_bound
    bound = params.security_margin_bits + params.modulus_bits
    return [
        ("flooding: σ required", "√(12τ)·2^(s/2)·B_ct", _bits(params.required_flood_sigma())),
        ("flooding: σ_flood", "2^flood_bits", _bits(params.sigma_flood)),
        ("precision: flooding", "4σ·√(N/2)·√t/Δ",
         _bits(decoded_flooding_error(params.sigma_flood, n, t, scale))),
        ("precision: ciphertext noise", "N·B_ct/Δ",
         _bits(decoded_ciphertext_error(n, budget.aggregate, scale))),
        ("precision: binary64", "2·√N·ε·√2·V + K·N/(2Δ)",
         _bits(decoded_float_error(n, scale, params.value_bound, params.k_max))),
        ("precision: total ≤ 2^-p·V", "the three above",
         f"{_bits(budget.decoded_error())} ≤ {_bits(target)}"),
        ("headroom: coefficients < q/2", "√2·Δ·V + K·float + B_ct + t·12σ",
         f"{_bits(budget.coefficient_bound())} < {_bits(params.data_modulus / 2)}"),
        ("security: log2 q ≤ bound", "HE standard, 128-bit",
         f"{params.modulus_bits:.2f} ≤ {bound:.0f}"),
    ]  # fmt: skip


def _margin_rows(params: ParameterSet) -> list[Row]:
    return [
        ("margin: statistical security at rule", "2·log2(σ/(√(12τ)·B_ct))",
         f"{params.statistical_security_at_rule:.2f} bits"),
        ("margin: flooding", "log2(σ_flood / σ required)",
         f"{params.flooding_margin_bits:.2f} bits"),
        ("margin: below the 128-bit bound", "bound − log2 q",
         f"{params.security_margin_bits:.2f} bits"),
        ("margin: headroom", "log2(q/2) − log2(coefficients)", f"{params.headroom_bits:.2f} bits"),
        ("margin: precision", "log2(2^-p·V / error)", f"{params.precision_margin_bits:.2f} bits"),
        ("encoding residue (not in B_ct)", "s, were K·float error in B_ct",
         f"{params.residue_security_bits:.2f} bits"),
    ]  # fmt: skip


def explain(params: ParameterSet) -> list[Row]:
    """The derivation term by term: (name, formula, value), then the rules and margins."""
    return [*_term_rows(params), *_rule_rows(params), *_margin_rows(params)]


def render_explanation(params: ParameterSet) -> str:
    """``explain`` as an aligned text table, headed by the set's name and shape."""
    rows = explain(params)
    head = (
        f"{params.name}: N = {params.poly_degree}, data primes {list(params.prime_bits)} bits, "
        f"special prime {params.special_prime.bit_length()} bits, Δ = 2^{params.scale_bits}, "
        f"V = 2^{params.value_bits}, K_max = {params.k_max}, n ≤ {params.committee_max}, "
        f"τ = {params.tau}, s = {params.stat_security}"
    )
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows]
    return "\n".join([head, *lines])
