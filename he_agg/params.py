"""Named CKKS parameter sets, derived from four rules with stated margins, and checked.

The rules (DESIGN §4); every noise term is a named function in :mod:`he_agg.noise`:

* **security**: log2 of the whole coefficient modulus (data primes and SEAL's special
  prime) is at most the HE standard's bound for N at 128 bits. Derived sets stay
  ``SECURITY_MARGIN_BITS`` below it.
* **flooding**: each member's flooding noise meets σ_flood ≥ √(12τ)·2^(s/2)·B_ct with
  s ≥ 40, B_ct the worst case of the aggregate's key-dependent noise for K_max clients
  (K·B_fresh plus (K+1)·½ of encoding rounding). Derived sets clear the rule by
  ``FLOOD_MARGIN_BITS``, so s at the rule is at least 40 + 2·margin.
* **precision**: the decoded error (flooding, ciphertext noise and binary64 arithmetic)
  is at most 2^-p of the value bound V, the largest |Σ_k n_k·x_k| in any real.
* **headroom**: the message's coefficients √2·Δ·V plus every noise term stay below q/2.

**Supported range (the default set).** K ≤ 1000 clients, each uploading reals with
|n_k·x| ≤ V/K_max ≈ 1.1·10^9: for example n_k ≤ 10^6 samples with |x| ≤ 10^3, or any
other split of that product. The expected largest decoded error E on any real of
Σ_k n_k·x_k, Σ_k n_k included, is at most 2^(v−p) (``expected_max_error``), so the
average is off by about E·(1 + |x|)/Σ_k n_k.

**Why widen V rather than declare a weight unit.** Dividing every count by a unit u
changes only the scale: the error on the average is 2^-p·V·u/Σ n_k either way, so a
unit buys no precision, and it needs a new federation field that every client applies
identically or the average is silently wrong. Widening costs no upload bytes: Δ shrinks
as V grows, and log2 q ≈ log2 σ + log2(√(N/2)·√t) + p + 3.5 does not involve V. The set
moves from N = 4096 to 8192 because p = 30 with both margins needs log2 q = 109.3 there
(108 allowed); at 8192 it takes 111.8 of 218 bits and 23.75 bytes per parameter (a
ciphertext carries N reals either way). A federation whose Σ n_k is small derives a set
with a smaller V for finer absolute precision (``he-agg params --value-bits``); clients
may also pass n_k over a unit the federation agrees on (``weighted_vector`` takes reals).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field, fields, replace
from typing import Any

from he_agg import noise
from he_agg.errors import ParameterError
from he_agg.modarith import MAX_PRIME_BITS, find_ntt_primes, is_prime
from he_agg.noise import FLOOD_TAIL, NOISE_BOUND, describe, explain, render_explanation
from he_agg.sampling import MAX_FLOOD_BITS

__all__ = [
    "DEFAULT",
    "FLOOD_MARGIN_BITS",
    "FLOOD_TAIL",
    "HE_STANDARD_MAX_BITS",
    "NOISE_BOUND",
    "SECURITY_MARGIN_BITS",
    "SUPPORTED_MAX_SAMPLES",
    "SUPPORTED_MAX_VALUE",
    "ParameterSet",
    "derive_parameters",
    "explain",
    "render_explanation",
]

# HE standard (and SEAL's CoeffModulus::MaxBitCount) at 128-bit classical security.
HE_STANDARD_MAX_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
FLOOD_MARGIN_BITS = 1.0  # derived σ_flood ≥ 2^1 × the rule: s at the rule ≥ 42
SECURITY_MARGIN_BITS = 1.0  # derived log2 q ≤ the HE standard's bound − 1
SUPPORTED_MAX_SAMPLES = 10**6  # the default set's documented range, per client …
SUPPORTED_MAX_VALUE = 10**3  # … with |x| up to this, at K_max = 1000
_DEFAULT_K_MAX = 1000
_DEFAULT_VALUE_BITS = math.ceil(
    math.log2(_DEFAULT_K_MAX * SUPPORTED_MAX_SAMPLES * SUPPORTED_MAX_VALUE)
)
_MIN_STAT_SECURITY = 40
# The precision rule's flooding term uses a measured constant (4, DESIGN §4), so a set
# within 1% of its target passes: sets derived before the binary64 and ciphertext terms
# were counted (the old default's total is 2^-9.997·V against 2^-10·V) stay loadable.
_PRECISION_TOLERANCE = 1.01


@dataclass(frozen=True)
class ParameterSet:
    """Everything that fixes the ciphertext space and the noise budget of a federation."""

    name: str
    poly_degree: int
    data_primes: tuple[int, ...]
    special_prime: int
    scale_bits: int
    flood_bits: int
    stat_security: int = 40
    tau: int = 1024
    k_max: int = _DEFAULT_K_MAX
    committee_max: int = 8
    value_bits: int = _DEFAULT_VALUE_BITS
    precision_bits: int = 30
    proofs: bool = False  # uploads are he_agg.rlwe encryptions with he_agg.wellformed proofs
    _fingerprint: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "_fingerprint", hashlib.sha256(self.canonical()).digest())

    # ---- derived quantities -------------------------------------------------
    @property
    def slots(self) -> int:
        """Reals carried by one ciphertext: both halves of N/2 complex slots."""
        return self.poly_degree

    @property
    def data_modulus(self) -> int:
        return math.prod(self.data_primes)

    @property
    def prime_bits(self) -> tuple[int, ...]:
        return tuple(q.bit_length() for q in self.data_primes)

    @property
    def modulus_bits(self) -> float:
        """log2 of the whole coefficient modulus, special prime included."""
        return math.log2(self.data_modulus * self.special_prime)

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def sigma_flood(self) -> float:
        return float(2**self.flood_bits)

    @property
    def value_bound(self) -> float:
        return float(2**self.value_bits)

    @property
    def client_value_bound(self) -> float:
        """The bound one client must respect on |n_k·x| so that K_max of them stay under V."""
        return self.value_bound / self.k_max

    # ---- noise (each term in he_agg.noise) ----------------------------------
    def fresh_noise_bound(self) -> float:
        """B_fresh: the key-dependent noise of one client's ciphertext. Without proofs, one
        fresh SEAL encryption under the n-member collective key; with proofs, the larger of
        an honest he_agg.rlwe encryption and what an accepted proof allows (noise (f))."""
        if self.proofs:
            return noise.proven_client_bound(self.poly_degree, self.committee_max)
        return noise.fresh_noise_bound(self.poly_degree, self.committee_max, self.special_prime)

    def aggregate_noise_bound(self) -> float:
        """B_ct: worst case over K_max fresh encryptions added together, with rounding."""
        return noise.aggregate_noise_bound(self.k_max, self.fresh_noise_bound())

    def required_flood_sigma(self) -> float:
        return noise.rule_sigma(self.tau, self.stat_security, self.aggregate_noise_bound())

    def budget(self, threshold: int | None = None) -> noise.Budget:
        t = self.committee_max if threshold is None else threshold
        return noise.Budget(
            self.poly_degree,
            self.scale,
            self.sigma_flood,
            self.value_bound,
            self.aggregate_noise_bound(),
            self.k_max,
            t,
        )

    def expected_max_error(self, threshold: int | None = None) -> float:
        """Decoded max error on the weighted sum, in value units: every term counted."""
        return self.budget(threshold).decoded_error()

    def error_bound(self, threshold: int, z: float = 7.0) -> float:
        """A z-sigma bound on any one decoded value of the weighted sum.

        A decoded slot carries the flooding noise of t members, Gaussian with standard
        deviation σ_flood·√t·√(N/2)/Δ, plus the deterministic worst cases of the
        ciphertext noise and the binary64 arithmetic. With z = 7 the chance that any of
        a million slots exceeds it is below 3·10^-6.
        """
        n, sigma, scale = self.poly_degree, self.sigma_flood, self.scale
        flooding = noise.decoded_flooding_error(sigma, n, threshold, scale)
        deterministic = self.budget(threshold).decoded_error() - flooding
        std = sigma * math.sqrt(threshold * n / 2) / scale
        return z * std + deterministic

    def decryption_noise_bound(self) -> float:
        """Every noise term in a decrypted coefficient: B_ct, float error, t·12σ tails."""
        return self.budget().noise_coefficients()

    def upload_bytes_per_parameter(self) -> float:
        return 2 * sum(self.prime_bits) / 8

    # ---- margins --------------------------------------------------------------
    @property
    def statistical_security_at_rule(self) -> float:
        """s for which σ_flood meets the rule exactly: the round's statistical distance
        is 2^-s over τ decryptions."""
        return noise.statistical_security(self.sigma_flood, self.tau, self.aggregate_noise_bound())

    @property
    def flooding_margin_bits(self) -> float:
        """log2(σ_flood / rule at the configured s)."""
        return math.log2(self.sigma_flood / self.required_flood_sigma())

    @property
    def security_margin_bits(self) -> float:
        """Bits of log2 q below the HE standard's 128-bit bound for N."""
        return HE_STANDARD_MAX_BITS[self.poly_degree] - self.modulus_bits

    @property
    def headroom_bits(self) -> float:
        used = self.budget().coefficient_bound()
        return math.log2(self.data_modulus / 2) - math.log2(used)

    @property
    def precision_margin_bits(self) -> float:
        return math.log2(2.0**-self.precision_bits * self.value_bound / self.expected_max_error())

    @property
    def residue_security_bits(self) -> float:
        """s the flooding would give SEAL's binary64 encoding error too, were it counted
        in B_ct (it is not; see :mod:`he_agg.noise`). Negative means no such guarantee."""
        residue = self.aggregate_noise_bound() + self.budget().float_coefficients()
        return noise.statistical_security(self.sigma_flood, self.tau, residue)

    # ---- the rules ----------------------------------------------------------
    def validate(self) -> None:
        self._check_security()
        self._check_flooding()
        error = self.expected_max_error()
        if error > 2.0**-self.precision_bits * self.value_bound * _PRECISION_TOLERANCE:
            raise ParameterError(
                "precision",
                f"expected error 2^{math.log2(error):.2f} exceeds 2^-{self.precision_bits}·V "
                f"= 2^{self.value_bits - self.precision_bits}",
            )
        used = self.budget().coefficient_bound()
        if used >= self.data_modulus / 2:
            raise ParameterError(
                "headroom",
                f"√2·V·Δ + noise = 2^{math.log2(used):.2f} does not fit below q/2 "
                f"= 2^{math.log2(self.data_modulus) - 1:.2f}",
            )

    def _check_security(self) -> None:
        n = self.poly_degree
        if n not in HE_STANDARD_MAX_BITS:
            raise ParameterError("security", f"N={n} is not one of {sorted(HE_STANDARD_MAX_BITS)}")
        primes = (*self.data_primes, self.special_prime)
        if not self.data_primes:
            raise ParameterError("security", "at least one data prime is needed")
        if len(set(primes)) != len(primes):
            raise ParameterError("security", "primes must be distinct")
        for q in primes:
            if q.bit_length() > MAX_PRIME_BITS or not is_prime(q) or q % (2 * n) != 1:
                raise ParameterError("security", f"{q} is not a prime ≡ 1 mod 2N of ≤ 60 bits")
        total_bits = sum(q.bit_length() for q in primes)
        if total_bits > HE_STANDARD_MAX_BITS[n]:
            raise ParameterError(
                "security",
                f"log2 q = {total_bits} bits exceeds {HE_STANDARD_MAX_BITS[n]} for N={n}",
            )

    def _check_flooding(self) -> None:
        if self.stat_security < _MIN_STAT_SECURITY:
            raise ParameterError("flooding", f"statistical security s={self.stat_security} < 40")
        if min(self.tau, self.k_max, self.committee_max) < 1:
            raise ParameterError("flooding", "τ, K_max and the committee size must be ≥ 1")
        need = self.required_flood_sigma()
        if self.sigma_flood < need:
            raise ParameterError(
                "flooding",
                f"σ_flood = 2^{self.flood_bits} is below the rule's 2^{math.log2(need):.2f}",
            )
        if self.flood_bits > MAX_FLOOD_BITS:
            raise ParameterError("flooding", "σ_flood too wide for the two-part noise sampler")

    # ---- identity -----------------------------------------------------------
    def canonical(self) -> bytes:
        """A canonical encoding: every field, fixed order, fixed widths, no floats."""
        parts = [
            b"he-agg/params/v1",
            struct.pack("<H", len(self.name.encode())),
            self.name.encode(),
            struct.pack("<IB", self.poly_degree, len(self.data_primes)),
            *(struct.pack("<Q", q) for q in self.data_primes),
            struct.pack(
                "<QiiIIIIii",
                self.special_prime,
                self.scale_bits,
                self.flood_bits,
                self.stat_security,
                self.tau,
                self.k_max,
                self.committee_max,
                self.value_bits,
                self.precision_bits,
            ),
        ]
        if self.proofs:  # absent for sets without proofs: their fingerprints are unchanged
            parts.append(b"proofs")
        return b"".join(parts)

    @property
    def fingerprint(self) -> bytes:
        return self._fingerprint

    def to_dict(self) -> dict[str, object]:
        """The constructor's fields, JSON-ready; ``from_dict`` rebuilds (and re-validates) it."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out["data_primes"] = list(self.data_primes)
        return out

    @classmethod
    def from_dict(cls, data: object) -> ParameterSet:
        names = {f.name: f for f in fields(cls) if f.init}
        if not isinstance(data, dict) or set(data) - set(names) or "poly_degree" not in data:
            raise ParameterError("format", f"expected an object with the fields {sorted(names)}")
        try:
            values = dict(data)
            values["data_primes"] = tuple(int(q) for q in values["data_primes"])
            for name in names:
                if name in values and name not in ("name", "data_primes", "proofs"):
                    values[name] = int(values[name])
            if not isinstance(values.get("proofs", False), bool):
                raise TypeError("proofs must be true or false")
            return cls(**values)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ParameterError("format", f"malformed parameter set: {exc}") from exc

    def describe(self) -> dict[str, object]:
        """The set, its rule numbers, its margins and its supported range, JSON-ready."""
        return describe(self)


def _split_bits(total: int) -> tuple[int, ...]:
    count = -(-total // MAX_PRIME_BITS)
    base, extra = divmod(total, count)
    return tuple(base + 1 if i < extra else base for i in range(count))


def _smallest_special_prime(n: int) -> int:
    for bits in range((2 * n).bit_length() + 2, MAX_PRIME_BITS + 1):
        try:
            return find_ntt_primes(n, (bits,))[0]
        except ValueError:
            continue
    raise ParameterError("security", f"no special prime for N={n}")  # pragma: no cover


def _scale_bits(budget: noise.Budget, precision_bits: int) -> int:
    """The smallest Δ = 2^b with decoded error ≤ 2^-p·V: the error is A/Δ + C."""
    fixed = replace(budget, scale=math.inf).decoded_error()
    per_scale = replace(budget, scale=1.0).decoded_error() - fixed
    room = 2.0**-precision_bits * budget.value_bound - fixed
    if room <= 0:
        raise ParameterError(
            "precision",
            f"2^-{precision_bits}·V is finer than SEAL's binary64 encoding and decoding "
            f"guarantee (2^{math.log2(fixed / budget.value_bound):.1f}·V)",
        )
    return math.ceil(math.log2(per_scale / room))


def _data_primes(budget: noise.Budget) -> tuple[int, ...]:
    """The fewest data bits whose primes leave every term below q/2."""
    used = budget.coefficient_bound()
    bits = math.ceil(math.log2(2 * used))
    while True:
        primes = find_ntt_primes(budget.poly_degree, _split_bits(bits))
        if math.prod(primes) / 2 > used:
            return primes
        bits += 1


def derive_parameters(
    name: str = "he-agg-default",
    *,
    k_max: int = _DEFAULT_K_MAX,
    committee_max: int = 8,
    tau: int = 1024,
    stat_security: int = 40,
    value_bits: int = _DEFAULT_VALUE_BITS,
    precision_bits: int = 30,
    proofs: bool = True,
) -> ParameterSet:
    """The smallest parameter set (smallest N, then fewest data bits) meeting all four
    rules with the stated margins.

    For each N: the smallest special prime (its only job is to make SEAL divide the
    fresh-encryption noise down), σ_flood the rule times 2^FLOOD_MARGIN_BITS rounded up
    to a power of two, Δ the smallest power of two meeting the precision rule, then the
    fewest data bits with every term below q/2; accept if log2 q is at least
    SECURITY_MARGIN_BITS below the HE standard's bound.
    """
    rules: dict[str, Any] = dict(
        stat_security=stat_security,
        tau=tau,
        k_max=k_max,
        committee_max=committee_max,
        value_bits=value_bits,
        precision_bits=precision_bits,
        proofs=proofs,
    )
    errors: list[str] = []
    for n, max_bits in sorted(HE_STANDARD_MAX_BITS.items()):
        special = _smallest_special_prime(n)
        fresh = (
            noise.proven_client_bound(n, committee_max)
            if proofs
            else noise.fresh_noise_bound(n, committee_max, special)
        )
        b_ct = noise.aggregate_noise_bound(k_max, fresh)
        need = noise.rule_sigma(tau, stat_security, b_ct)
        flood_bits = math.ceil(math.log2(need) + FLOOD_MARGIN_BITS)
        budget = noise.Budget(
            n, 1.0, float(2**flood_bits), 2.0**value_bits, b_ct, k_max, committee_max
        )
        scale_bits = _scale_bits(budget, precision_bits)
        primes = _data_primes(replace(budget, scale=float(2**scale_bits)))
        total = math.log2(math.prod(primes) * special)
        if total > max_bits - SECURITY_MARGIN_BITS:
            errors.append(f"N={n}: needs log2 q = {total:.1f} > {max_bits} − margin")
            continue
        return ParameterSet(
            name=name,
            poly_degree=n,
            data_primes=primes,
            special_prime=special,
            scale_bits=scale_bits,
            flood_bits=flood_bits,
            **rules,
        )
    raise ParameterError("security", "no N up to 32768 meets the rules: " + "; ".join(errors))


DEFAULT = derive_parameters()
