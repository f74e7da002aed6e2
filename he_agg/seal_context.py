"""SEAL objects for a parameter set: the context, and moving objects in and out of SEAL.

TenSEAL's ``sealapi`` saves and loads through file paths only, so objects cross over
through a private temporary folder (in memory where /dev/shm exists).
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import tenseal.sealapi as sealapi

from he_agg.errors import SealFormatError
from he_agg.params import ParameterSet
from he_agg.seal_codec import ParmsId

__all__ = ["SealContext", "seal_context"]


class _Saveable(Protocol):
    def save(self, path: str) -> None: ...


class _Scratch(threading.local):
    folder: str | None = None


_scratch = _Scratch()


def _scratch_path(name: str) -> str:
    if _scratch.folder is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _scratch.folder = tempfile.mkdtemp(prefix="he-agg-", dir=base)
    return os.path.join(_scratch.folder, f"{name}-{os.getpid()}-{threading.get_ident()}")


def save_bytes(obj: _Saveable) -> bytes:
    path = _scratch_path("save")
    try:
        obj.save(path)
        with open(path, "rb") as handle:
            return handle.read()
    finally:
        if os.path.exists(path):
            os.unlink(path)


@dataclass(frozen=True)
class SealContext:
    params: ParameterSet
    context: Any
    data_parms_id: ParmsId
    key_parms_id: ParmsId

    def load(self, kind: type[Any], blob: bytes) -> Any:
        """Load SEAL bytes into a fresh object of ``kind`` (SEAL validates them)."""
        path = _scratch_path("load")
        obj = kind()
        try:
            with open(path, "wb") as handle:
                handle.write(blob)
            obj.load(self.context, path)
        except (RuntimeError, ValueError) as exc:
            raise SealFormatError(f"SEAL refused the {kind.__name__}: {exc}") from exc
        finally:
            if os.path.exists(path):
                os.unlink(path)
        return obj


@cache
def seal_context(params: ParameterSet) -> SealContext:
    """The SEAL context of a parameter set: data primes then the special prime."""
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_degree)
    moduli = [sealapi.Modulus(q) for q in (*params.data_primes, params.special_prime)]
    parms.set_coeff_modulus(moduli)
    context = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise SealFormatError(f"SEAL rejects the parameters: {context.parameters_error_message()}")

    def as_id(values: list[int]) -> ParmsId:
        return (values[0], values[1], values[2], values[3])

    return SealContext(
        params=params,
        context=context,
        data_parms_id=as_id(context.first_parms_id()),
        key_parms_id=as_id(context.key_parms_id()),
    )
