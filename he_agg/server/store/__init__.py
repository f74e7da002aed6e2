"""The server's storage seam: typed rows and protocols (base), SQL stores, blob files."""

from __future__ import annotations

from pathlib import Path

from he_agg.server.store.base import (
    BlobStore,
    EpochRow,
    FederationRow,
    PartyRow,
    RoundRow,
    ShareRow,
    Store,
    UploadRow,
)
from he_agg.server.store.blobs import FileBlobStore, FileBytes
from he_agg.server.store.engine import normalise_url
from he_agg.server.store.sql import SqlStore

__all__ = [
    "BlobStore",
    "EpochRow",
    "FederationRow",
    "FileBlobStore",
    "FileBytes",
    "PartyRow",
    "RoundRow",
    "ShareRow",
    "SqlStore",
    "Store",
    "UploadRow",
    "open_store",
    "sqlite_url",
]


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite database file (relative paths stay relative to the cwd)."""
    return f"sqlite:///{path}"


def open_store(url: str) -> Store:
    """The store at ``url`` (``sqlite:///PATH`` or ``postgresql://…``), migrated to head.

    Anything else raises :class:`~he_agg.errors.StoreError`, as does a database that
    cannot be reached; a schema newer than this he-agg raises
    :class:`~he_agg.errors.SchemaError`.
    """
    normalise_url(url)  # refuse an unsupported scheme before anything is opened
    return SqlStore(url)
