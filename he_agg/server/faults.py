"""Crash points for the torture harness: ``HE_AGG_CRASH_AT=point:probability,…``.

At a named point, the server kills itself with SIGKILL (no handlers, no flushing: the same
as ``kill -9``) with the given probability. Unset, as in production, every point is a
no-op. The harness (``benchmarks/reliability.py``) uses it to land kills exactly between
two durable steps, which random timing would rarely hit.

Points: ``upload.blob_committed`` (the blob is durable, its row is not),
``upload.recorded`` (the row is committed, the reply not sent), ``close.summed`` (the
aggregate is stored, the round not yet closed), ``share.stored`` (a decryption share is
committed, the reply not sent), ``publish.combined`` (the model is stored, the round not
yet published).
"""

from __future__ import annotations

import logging
import os
import random
import signal

__all__ = ["POINTS", "crash_point", "parse"]

log = logging.getLogger("he_agg.faults")

POINTS = frozenset(
    {
        "upload.blob_committed",
        "upload.recorded",
        "close.summed",
        "share.stored",
        "publish.combined",
    }
)


def parse(text: str) -> dict[str, float]:
    """``"a:0.5,b"`` → {"a": 0.5, "b": 1.0}; unknown points or bad numbers are errors."""
    chosen: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, probability = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"unknown crash point {name!r}; known: {', '.join(sorted(POINTS))}")
        value = float(probability) if probability else 1.0
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"crash probability for {name!r} must be in [0, 1]")
        chosen[name] = value
    return chosen


_CHOSEN = parse(os.environ.get("HE_AGG_CRASH_AT", ""))
if _CHOSEN:
    log.warning("crash points armed (torture harness only)", extra={"points": _CHOSEN})


def crash_point(name: str) -> None:
    """SIGKILL this process here with the configured probability (never when unset)."""
    probability = _CHOSEN.get(name)
    if probability and random.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)
