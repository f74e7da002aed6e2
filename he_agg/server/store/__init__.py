"""The server's storage seam: typed rows and protocols (base), SQL stores, blob files."""

from he_agg.server.store.base import (
    BlobStore,
    FederationRow,
    PartyRow,
    RoundRow,
    ShareRow,
    Store,
    UploadRow,
)
from he_agg.server.store.blobs import FileBlobStore

__all__ = [
    "BlobStore",
    "FederationRow",
    "FileBlobStore",
    "PartyRow",
    "RoundRow",
    "ShareRow",
    "Store",
    "UploadRow",
]
