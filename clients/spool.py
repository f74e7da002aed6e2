"""The SDK's upload spool: the exact bytes of an upload, kept until the server acknowledges
them, so that a retry after a lost acknowledgement (a dropped connection, a killed client)
sends identical bytes, which the server answers with its first receipt instead of a 409.

One file per (federation, round, client): a JSON header line (the manifest and a digest
of the update it encrypts), then the envelope. Written atomically with mode 0600 (the
bytes are ciphertext, but still this client's), removed once acknowledged or refused for
good (``Participant.submit``). A spooled upload for another update (the caller changed it)
is discarded, not sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from he_agg.packing import Manifest, flatten

__all__ = ["UploadSpool", "default_spool_dir", "update_digest"]


def default_spool_dir() -> Path:
    """$XDG_CACHE_HOME/he-agg/uploads (~/.cache/he-agg/uploads)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "he-agg" / "uploads"


def update_digest(update: Mapping[str, Any], num_samples: float) -> str:
    """sha256 of the flattened update and its sample count: what the spooled bytes encrypt."""
    vector, manifest = flatten(update)
    h = hashlib.sha256(manifest.to_json().encode())
    h.update(np.ascontiguousarray(vector, dtype="<f8").tobytes())
    h.update(repr(float(num_samples)).encode())
    return h.hexdigest()


class UploadSpool:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, federation: str, round: int, client: str) -> Path:
        return self.folder / f"{federation}.{round}.{client}.upload"

    def load(
        self, federation: str, round: int, client: str, digest: str
    ) -> tuple[bytes, Manifest] | None:
        """The spooled upload for this update, if any (one for another update is dropped)."""
        path = self._path(federation, round, client)
        try:
            data = path.read_bytes()
            header, body = data.split(b"\n", 1)
            meta = json.loads(header)
            if meta.get("update") != digest:
                path.unlink(missing_ok=True)
                return None
            return body, Manifest.from_json(meta["manifest"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError):  # a torn or foreign file: drop it, encrypt again
            path.unlink(missing_ok=True)
            return None

    def keep(
        self, federation: str, round: int, client: str, digest: str, body: bytes, manifest: Manifest
    ) -> None:
        """Write atomically, mode 0600, fsynced."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        header = json.dumps({"update": digest, "manifest": manifest.to_json()}).encode()
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".spool.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(header + b"\n" + body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._path(federation, round, client))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def drop(self, federation: str, round: int, client: str) -> None:
        self._path(federation, round, client).unlink(missing_ok=True)
