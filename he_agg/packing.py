"""Model updates ↔ flat real vectors, and the FedAvg weighting around encryption.

A ``state_dict`` (torch tensors) or a mapping of numpy arrays flattens, in key order,
into one float64 vector plus a manifest of names, shapes and dtypes. Integer and bool
buffers are carried as reals and rounded back, so they come back exactly whenever the
averaged value is within the CKKS bound of an integer.

Weighting: a client uploads [n_k, n_k·x_k] (its sample count in reserved slot 0); after
decryption the server-free average is Σ n_k x_k / Σ n_k. Every real of that vector must
satisfy |n_k·x| ≤ V/K_max, so that K_max clients stay under the parameter set's V; the
default set allows about 1.1·10^9, for example n_k ≤ 10^6 samples with |x| ≤ 10^3
(:mod:`he_agg.params`). Every decoded real, Σ n_k included, is off by about
E = ``params.expected_max_error()``, so the average is off by about E·(1 + |x|)/Σ n_k:
the count's error rescales every value.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from he_agg.errors import PackingError
from he_agg.modarith import F64Array
from he_agg.params import ParameterSet

__all__ = ["Manifest", "TensorSpec", "flatten", "unflatten", "weighted_average", "weighted_vector"]

_HEADER_PREFIX = "zlib:"
_MAX_MANIFEST = 16 * 1024 * 1024


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, or "torch.<name>" for tensors
    is_torch: bool

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def is_integer(self) -> bool:
        name = self.dtype.removeprefix("torch.")
        return name == "bool" or name.startswith(("int", "uint"))


@dataclass(frozen=True)
class Manifest:
    tensors: tuple[TensorSpec, ...]

    @property
    def size(self) -> int:
        return sum(spec.size for spec in self.tensors)

    def to_json(self) -> str:
        return json.dumps(
            [[s.name, list(s.shape), s.dtype, s.is_torch] for s in self.tensors],
            separators=(",", ":"),
        )

    def to_header(self) -> str:
        """The manifest as an HTTP header value: zlib, then URL-safe base64 (large models
        have hundreds of tensors, and servers cap header sizes)."""
        packed = zlib.compress(self.to_json().encode(), 9)
        return _HEADER_PREFIX + base64.urlsafe_b64encode(packed).decode()

    @classmethod
    def from_header(cls, value: str) -> Manifest:
        """Read ``to_header`` output (or plain JSON)."""
        if not value.startswith(_HEADER_PREFIX):
            return cls.from_json(value)
        try:
            packed = base64.urlsafe_b64decode(value[len(_HEADER_PREFIX) :].encode())
            inflater = zlib.decompressobj()
            text = inflater.decompress(packed, _MAX_MANIFEST)
            if inflater.unconsumed_tail:
                raise PackingError("manifest too large")
        except (ValueError, zlib.error) as exc:
            raise PackingError(f"malformed manifest header: {exc}") from exc
        return cls.from_json(text.decode(errors="replace"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            rows = json.loads(text)
            return cls(
                tuple(
                    TensorSpec(str(n), tuple(int(d) for d in s), str(t), bool(b))
                    for n, s, t, b in rows
                )
            )
        except (ValueError, TypeError) as exc:
            raise PackingError(f"malformed manifest: {exc}") from exc


def _as_array(value: Any) -> tuple[np.ndarray[Any, Any], str, bool]:
    if hasattr(value, "detach"):  # a torch tensor; torch is imported only when used
        tensor = value.detach().cpu()
        dtype = str(tensor.dtype)
        if tensor.is_floating_point():
            tensor = tensor.double()
        return tensor.numpy(), dtype, True
    array = np.asarray(value)
    if array.dtype.kind not in "fbiu":
        raise PackingError(f"cannot pack dtype {array.dtype}")
    return array, array.dtype.name, False


def flatten(update: Mapping[str, Any]) -> tuple[F64Array, Manifest]:
    """Concatenate every tensor (in key order) into one float64 vector."""
    if not update:
        raise PackingError("the update is empty")
    parts, specs = [], []
    for name, value in update.items():
        array, dtype, is_torch = _as_array(value)
        flat = array.astype(np.float64).reshape(-1)
        if not np.isfinite(flat).all():
            raise PackingError(f"tensor {name!r} holds NaN or infinity")
        parts.append(flat)
        specs.append(TensorSpec(name, tuple(array.shape), dtype, is_torch))
    return np.concatenate(parts), Manifest(tuple(specs))


def unflatten(vector: F64Array, manifest: Manifest) -> dict[str, Any]:
    """Split a vector back into named tensors; integer dtypes are rounded."""
    if vector.size < manifest.size:
        raise PackingError(f"vector has {vector.size} values, manifest needs {manifest.size}")
    out: dict[str, Any] = {}
    position = 0
    for spec in manifest.tensors:
        chunk = vector[position : position + spec.size].reshape(spec.shape)
        position += spec.size
        if spec.is_integer:
            chunk = np.rint(chunk)
        chunk = np.array(chunk, dtype=np.float64).reshape(spec.shape)  # keeps 0-d tensors 0-d
        if spec.is_torch:
            import torch

            out[spec.name] = torch.from_numpy(chunk).to(
                getattr(torch, spec.dtype.removeprefix("torch."))
            )
        else:
            out[spec.name] = chunk.astype(spec.dtype)
    return out


def weighted_vector(vector: F64Array, num_samples: float, params: ParameterSet) -> F64Array:
    """[n_k, n_k·x_k], refusing anything that could push the sum past the value bound V.

    The bound is checked on every real, the count in slot 0 included: |n_k·x| ≤ V/K_max.
    """
    if not math.isfinite(num_samples) or num_samples <= 0:
        raise PackingError("num_samples must be a positive number")
    limit = params.client_value_bound
    weighted = np.empty(vector.size + 1, dtype=np.float64)
    weighted[0] = num_samples
    np.multiply(vector, num_samples, out=weighted[1:])
    peak = float(np.abs(weighted).max())
    if not peak <= limit:  # NaN fails too
        raise PackingError(
            f"|n_k·x| reaches {peak:.4g}, above this parameter set's per-client bound "
            f"V/K_max = 2^{params.value_bits}/{params.k_max} = {limit:.4g} (at n_k = "
            f"{num_samples:.4g} samples, |x| ≤ {limit / num_samples:.4g}); clip the update, "
            f"pass n_k in a larger unit the federation agrees on, or derive a parameter set "
            f"with a larger V"
        )
    return weighted


def weighted_average(decoded: F64Array, size: int) -> F64Array:
    """Σ n_k x_k / Σ n_k from a decrypted aggregate laid out as [Σ n_k, Σ n_k x_k]."""
    total_weight = float(decoded[0])
    if total_weight <= 0.5:
        raise PackingError(f"decrypted total weight {total_weight:.3g} is not positive")
    return decoded[1 : 1 + size] / total_weight
