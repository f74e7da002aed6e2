"""Collecting garbage: blobs no row names and scratch files no request owns.

A crash between a blob's commit and its row's (or a refused upload whose cleanup was cut
short) leaves a blob nothing names; a crash mid-body leaves a scratch file. Both are
removed at start and then every ``collect_seconds``, once older than ``collect_grace``
seconds: a blob is judged by its file time, which every commit of the same bytes
refreshes under the blob store's guard, and re-checked against the rows just before it
goes, so a blob being committed or referenced again is never the one removed.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from he_agg.server.store import BlobStore, Store

__all__ = ["Collected", "collect"]

log = logging.getLogger("he_agg.collector")


@dataclass(frozen=True)
class Collected:
    blobs: int
    scratch: int


def _unused(store: Store, digest: str) -> bool:
    return not store.blob_in_use(digest)


def collect(store: Store, blobs: BlobStore, now: float, grace: float) -> Collected:
    """Remove orphan blobs and stray scratch files older than ``grace`` seconds."""
    cutoff = now - grace
    scratch = blobs.clean_scratch(older_than=cutoff)
    referenced = store.referenced_blobs()
    removed = 0
    for digest in list(blobs.digests()):
        if digest in referenced:
            continue
        if blobs.remove_if_stale(digest, cutoff, functools.partial(_unused, store, digest)):
            removed += 1
    if removed or scratch:
        log.info("garbage collected", extra={"blobs": removed, "scratch": scratch})
    return Collected(removed, scratch)
