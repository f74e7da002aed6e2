"""Partial sums shared between replicas (tree aggregation).

Each replica adds the uploads it stored to its own running sum (:mod:`he_agg.server.sums`)
and, every ``partial_seconds`` while it changes, writes that sum with the list of what it
holds (client → sha256) into the blob folder the replicas share:
``partials/<federation>/<round>/<replica>.sum``. The replica that closes a round adds
the other replicas' partials to its own instead of re-reading their uploads, and reads
from the blobs only the uploads no usable partial holds.

A partial is an optimisation, never trusted for what it claims: it is used only if its
words match their sha256 (a torn or damaged file is skipped), its parameters and shape
are the round's, and every upload it lists is one of the round's committed uploads with
the same sha256 and held by no other sum being added. Anything else is ignored and the
uploads are added from their blobs, so the aggregate is always Σ of the committed uploads
the round names, which every member checks again on its own (keys.verify).

File: ``HEAGGPS1``, a 4-byte big-endian header length, the header (JSON: federation,
round, replica, parameter fingerprint, ciphertexts, included, words_sha256), then the
words (C, 2, L, N) as little-endian uint64, each below its prime. Written to a temporary
name and renamed, so a reader sees a whole file or the previous one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from he_agg.modarith import U64Array
from he_agg.params import ParameterSet

__all__ = ["Partial", "PartialFolder"]

log = logging.getLogger("he_agg.rounds")

_MAGIC = b"HEAGGPS1"


@dataclass(frozen=True)
class Partial:
    replica: str
    included: dict[str, str]  # client → sha256
    words: U64Array  # (C, 2, L, N), reduced


class PartialFolder:
    """The shared folder of partial sums, as one replica sees it."""

    def __init__(self, root: Path, replica: str) -> None:
        self.root = root
        self.replica = replica

    def _round(self, federation: str, number: int) -> Path:
        return self.root / federation / str(number)

    def write(
        self,
        federation: str,
        number: int,
        params: ParameterSet,
        included: dict[str, str],
        words: U64Array,
    ) -> None:
        """Replace this replica's partial for the round (atomically)."""
        words = np.ascontiguousarray(words, dtype="<u8")
        header = json.dumps(
            {
                "federation": federation,
                "round": number,
                "replica": self.replica,
                "fingerprint": params.fingerprint.hex(),
                "ciphertexts": int(words.shape[0]),
                "included": included,
                "words_sha256": hashlib.sha256(words.data).hexdigest(),
            },
            sort_keys=True,
        ).encode()
        folder = self._round(federation, number)
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{self.replica}-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(_MAGIC + len(header).to_bytes(4, "big") + header)
                out.write(words.data)
            os.replace(temporary, folder / f"{self.replica}.sum")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def others(self, federation: str, number: int, params: ParameterSet) -> list[Partial]:
        """The other replicas' partials for the round that are whole and of its
        parameters (whether their uploads are the round's is the caller's check)."""
        folder = self._round(federation, number)
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.glob("*.sum")):
            if path.stem == self.replica:
                continue
            partial = _read(path, federation, number, params)
            if partial is not None:
                found.append(partial)
        return found

    def remove_own(self, federation: str, number: int) -> None:
        """Remove this replica's partial, and the round's folder once it is empty (a
        partial written just after the closer removed the folder recreates it)."""
        folder = self._round(federation, number)
        (folder / f"{self.replica}.sum").unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (another replica's), or gone
            folder.rmdir()

    def remove_round(self, federation: str, number: int) -> None:
        shutil.rmtree(self._round(federation, number), ignore_errors=True)


def _read(path: Path, federation: str, number: int, params: ParameterSet) -> Partial | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # replaced or removed meanwhile
        return None
    try:
        if data[:8] != _MAGIC:
            raise ValueError("not a partial sum")
        length = int.from_bytes(data[8:12], "big")
        header = json.loads(data[12 : 12 + length])
        body = memoryview(data)[12 + length :]
        count = int(header["ciphertexts"])
        shape = (count, 2, len(params.data_primes), params.poly_degree)
        expected = (federation, number, params.fingerprint.hex())
        if (header["federation"], header["round"], header["fingerprint"]) != expected:
            raise ValueError("another round's or parameter set's partial")
        if len(body) != 8 * int(np.prod(shape)):
            raise ValueError("its words do not fill the shape it declares")
        if hashlib.sha256(body).hexdigest() != header["words_sha256"]:
            raise ValueError("its words do not match their sha256")
        words = np.frombuffer(body, dtype="<u8").reshape(shape).astype(np.uint64)
        primes = np.array(params.data_primes, dtype=np.uint64).reshape(1, 1, -1, 1)
        if (words >= primes).any():
            raise ValueError("a word is not below its prime")
        included = {str(k): str(v) for k, v in dict(header["included"]).items()}
        return Partial(str(header["replica"]), included, words)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring a partial sum", extra={"path": str(path), "reason": str(exc)})
        return None
