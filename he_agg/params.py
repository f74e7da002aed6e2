"""Named CKKS parameter sets, derived from the four rules and checked against them.

The rules (DESIGN §4):

* **security** — log2 of the whole coefficient modulus (data primes and SEAL's special
  prime) is at most the HE standard's bound for N at 128 bits.
* **flooding** — each member's flooding noise meets σ_flood ≥ √(12τ)·2^(s/2)·B_ct with
  s ≥ 40, B_ct a worst-case bound on the aggregate's noise for K_max clients.
* **precision** — the decoded error 4·σ_flood·√(N/2)·√t / Δ is at most 2^-p of the
  value bound V (the largest |Σ_k n_k·x_k| a federation promises).
* **headroom** — V·Δ plus every noise term stays below q/2, so nothing wraps.

B_ct, the worst case for one fresh public-key encryption in SEAL. SEAL encrypts zero at
the key level, c = (u·pk0 + e0, u·pk1 + e1), then divides by the special prime p with
rounding. Before the division the error is u·e_pk + e0 + e1·s; with ‖u‖∞ ≤ 1, ‖s‖∞ ≤ n
(n ternary member secrets), ‖e_pk‖∞ ≤ n·B_e and ‖e0‖∞, ‖e1‖∞ ≤ B_e it is at most
B_e·(1 + 2·N·n). Dividing by p leaves that over p, plus the rounding terms: ½ from c0
and ‖r1·s‖∞ ≤ N·n/2 from c1. Encoding rounds Δ·m, adding ½. B_e = 21 bounds SEAL's
centred binomial noise and our clipped Gaussian (6σ = 19.1) alike.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field, fields

from he_agg.errors import ParameterError
from he_agg.modarith import MAX_PRIME_BITS, find_ntt_primes, is_prime

__all__ = [
    "DEFAULT",
    "HE_STANDARD_MAX_BITS",
    "NOISE_BOUND",
    "ParameterSet",
    "derive_parameters",
]

# HE standard (and SEAL's CoeffModulus::MaxBitCount) at 128-bit classical security.
HE_STANDARD_MAX_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
NOISE_BOUND = 21  # ‖e‖∞ for SEAL's CBD noise and our 6σ-clipped Gaussian (σ = 3.19)
FLOOD_TAIL = 12  # flooding noise is clipped at 12σ (mass beyond it is below 2^-100)
_MIN_STAT_SECURITY = 40


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
    k_max: int = 1000
    committee_max: int = 8
    value_bits: int = 20
    precision_bits: int = 30
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

    def fresh_noise_bound(self) -> float:
        n, big_n = self.committee_max, self.poly_degree
        before_switch = NOISE_BOUND * (1 + 2 * big_n * n)
        return before_switch / self.special_prime + (big_n * n + 1) / 2 + 0.5

    def aggregate_noise_bound(self) -> float:
        """B_ct: worst case over K_max fresh encryptions added together."""
        return self.k_max * self.fresh_noise_bound()

    def required_flood_sigma(self) -> float:
        return (
            math.sqrt(12 * self.tau) * 2 ** (self.stat_security / 2) * self.aggregate_noise_bound()
        )

    def expected_max_error(self, threshold: int | None = None) -> float:
        """Decoded max error on the weighted sum, in value units (DESIGN §4)."""
        t = self.committee_max if threshold is None else threshold
        n = self.poly_degree
        return 4 * self.sigma_flood * math.sqrt(n / 2) * math.sqrt(t) / self.scale

    def error_bound(self, threshold: int, z: float = 7.0) -> float:
        """A z-sigma bound on any one decoded value of the weighted sum.

        A decoded slot carries the flooding noise of t members, Gaussian with standard
        deviation σ_flood·√t·√(N/2)/Δ, plus at most N·B_ct/Δ from the ciphertexts. With
        z = 7 the chance that any of a million slots exceeds it is below 3·10^-6.
        """
        std = self.sigma_flood * math.sqrt(threshold) * math.sqrt(self.poly_degree / 2)
        return (z * std + self.poly_degree * self.aggregate_noise_bound()) / self.scale

    def decryption_noise_bound(self) -> float:
        return self.aggregate_noise_bound() + self.committee_max * FLOOD_TAIL * self.sigma_flood

    def upload_bytes_per_parameter(self) -> float:
        return 2 * sum(self.prime_bits) / 8

    # ---- the rules ----------------------------------------------------------
    def validate(self) -> None:
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
        if FLOOD_TAIL * self.sigma_flood >= 2**62:
            raise ParameterError("flooding", "σ_flood too wide for 64-bit noise words")
        error = self.expected_max_error()
        if error > 2.0**-self.precision_bits * self.value_bound * (1 + 1e-12):
            raise ParameterError(
                "precision",
                f"expected error 2^{math.log2(error):.2f} exceeds 2^-{self.precision_bits}·V "
                f"= 2^{self.value_bits - self.precision_bits}",
            )
        used = self.value_bound * self.scale + self.decryption_noise_bound()
        if used >= self.data_modulus / 2:
            raise ParameterError(
                "headroom",
                f"V·Δ + noise = 2^{math.log2(used):.2f} does not fit below q/2 "
                f"= 2^{math.log2(self.data_modulus) - 1:.2f}",
            )

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
                if name in values and name not in ("name", "data_primes"):
                    values[name] = int(values[name])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError("format", f"malformed parameter set: {exc}") from exc

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "N": self.poly_degree,
            "data_prime_bits": list(self.prime_bits),
            "data_primes": list(self.data_primes),
            "special_prime": self.special_prime,
            "log2_q_total": sum(q.bit_length() for q in (*self.data_primes, self.special_prime)),
            "scale": f"2^{self.scale_bits}",
            "sigma_flood": f"2^{self.flood_bits}",
            "sigma_flood_required": f"2^{math.log2(self.required_flood_sigma()):.2f}",
            "B_ct": f"2^{math.log2(self.aggregate_noise_bound()):.2f}",
            "s": self.stat_security,
            "tau": self.tau,
            "K_max": self.k_max,
            "committee_max": self.committee_max,
            "V": f"2^{self.value_bits}",
            "expected_max_error": f"2^{math.log2(self.expected_max_error()):.2f}",
            "upload_bytes_per_param": self.upload_bytes_per_parameter(),
            "fingerprint": self.fingerprint.hex(),
        }


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


def derive_parameters(
    name: str = "he-agg-default",
    *,
    k_max: int = 1000,
    committee_max: int = 8,
    tau: int = 1024,
    stat_security: int = 40,
    value_bits: int = 20,
    precision_bits: int = 30,
) -> ParameterSet:
    """The smallest parameter set (smallest N, then fewest data bits) meeting all four rules.

    For each N: pick the smallest special prime (its only job is to make SEAL divide the
    fresh-encryption noise down; a ≥ log2(2N)+2-bit prime already makes that term small),
    set σ_flood to the rule rounded up to a power of two, Δ to the smallest power of two
    meeting the precision rule, then the fewest data bits with V·Δ + noise < q/2.
    """
    errors: list[str] = []
    for n, max_bits in sorted(HE_STANDARD_MAX_BITS.items()):
        special = _smallest_special_prime(n)
        special_bits = special.bit_length()
        probe = dict(
            poly_degree=n,
            special_prime=special,
            stat_security=stat_security,
            tau=tau,
            k_max=k_max,
            committee_max=committee_max,
            value_bits=value_bits,
            precision_bits=precision_bits,
        )
        b_fresh = (NOISE_BOUND * (1 + 2 * n * committee_max)) / special + (
            n * committee_max + 1
        ) / 2
        b_ct = k_max * (b_fresh + 0.5)
        flood_bits = math.ceil(math.log2(math.sqrt(12 * tau) * 2 ** (stat_security / 2) * b_ct))
        error_bits = flood_bits + 2 + (math.log2(n) - 1) / 2 + math.log2(committee_max) / 2
        scale_bits = math.ceil(error_bits + precision_bits - value_bits)
        used = 2 ** (value_bits + scale_bits) + b_ct + committee_max * FLOOD_TAIL * 2**flood_bits
        data_bits = math.ceil(math.log2(2 * used)) + 1  # +1: primes lie just below 2^bits
        if data_bits + special_bits > max_bits:
            errors.append(f"N={n}: needs {data_bits + special_bits} > {max_bits} bits")
            continue
        primes = find_ntt_primes(n, _split_bits(data_bits))
        return ParameterSet(
            name=name, data_primes=primes, scale_bits=scale_bits, flood_bits=flood_bits, **probe
        )
    raise ParameterError("security", "no N up to 32768 meets the rules: " + "; ".join(errors))


DEFAULT = derive_parameters()
