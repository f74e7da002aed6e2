"""Waiting for a federation to change, by long poll (GET …/watch; he_agg.server.watch).

Parties call :class:`Watcher` where they used to sleep between polls: it returns as soon as
anything they act on changed, or after ``wait`` seconds. Against a server without the
route (404), or when the request fails, it sleeps ``wait`` instead, so a caller's loop
behaves as it did with polling.
"""

from __future__ import annotations

import time

from he_agg.api import paths
from he_agg.api.models import Activity
from he_agg.api.transport import SignedClient
from he_agg.errors import ServiceError, TransportError

__all__ = ["Watcher"]

MAX_WAIT = 25.0  # below the server's 30 s cap and the SDK's 120 s read timeout


class Watcher:
    """Remembers the last activity tag seen, so each wait is for the next change."""

    def __init__(self, http: SignedClient, federation: str, poll: float = 0.5) -> None:
        """``poll``: the sleep between checks when the server cannot long-poll."""
        self.http = http
        self.federation = federation
        self.poll = poll
        self.tag: str | None = None
        self.supported = True

    def wait(self, seconds: float) -> None:
        """Return once the federation changed since the last call, or after ``seconds``
        (the first call returns at once, with the tag to wait on)."""
        seconds = max(0.0, min(seconds, MAX_WAIT))
        if not self.supported:
            time.sleep(min(seconds, self.poll))
            return
        started = time.monotonic()
        try:
            response = self.http.request("GET", paths.watch(self.federation, self.tag, seconds))
            self.tag = Activity.model_validate_json(response.content).tag
            return
        except ServiceError as exc:
            if exc.status == 404 and exc.detail == "Not Found":
                self.supported = False  # a server before long polls: poll instead
        except (TransportError, OSError):
            pass  # the caller's next request will say what is wrong
        time.sleep(max(0.0, min(self.poll, seconds - (time.monotonic() - started))))
