"""A SIGTERM that unwinds, for the commands that start servers and committee members.

``he-agg demo``, ``pilot`` and ``bench`` and the benchmark scripts start uvicorn and member
processes and stop them in ``finally`` blocks. Ctrl-C (KeyboardInterrupt) runs those
blocks; SIGTERM's default action killed the parent at once and left the children running.
:func:`exit_on_sigterm` makes SIGTERM raise ``SystemExit(143)`` in the main thread instead,
so the same blocks run.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["exit_on_sigterm"]


def _exit(signum: int, frame: FrameType | None) -> None:
    del frame
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit for this process (only the main thread may do so)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit)
