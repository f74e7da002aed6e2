"""The aggregator for the kill -9 part: a :class:`ServerProcess` whose next process waits
ready, so a restart after a kill does not pay the interpreter's start and imports.

While one process serves, the next one starts and imports the server's libraries
(FastAPI, SQLAlchemy, Alembic, uvicorn, numpy and he-agg's core), then blocks reading
its stdin. ``start()`` writes it one line, the HE_AGG_* environment of this incarnation
(the crash point it is armed with), and it then does all that a fresh server does: it imports
the server package, opens the same database and data folder, runs the migrations check,
cleans scratch, collects orphans and serves on the same port. ``cold=True`` starts a
process from nothing instead, as :class:`ServerProcess` does, to measure that too.

Run as ``python -m clients.bench.reliability_server PORT`` (what the standby is).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from clients.harness import ServerProcess

__all__ = ["WarmServer", "standby"]

_PRELOAD = (  # what the server imports, up to (not including) the server package itself
    "numpy",
    "fastapi",
    "fastapi.responses",
    "starlette.requests",
    "pydantic_settings",
    "sqlalchemy",
    "sqlalchemy.orm",
    "alembic.config",
    "alembic.runtime.migration",
    "alembic.script",
    "uvicorn",
    "uvicorn.main",
    "prometheus_client",
    "swagger_ui_bundle",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "he_agg.aggregate",
    "he_agg.api.models",
    "he_agg.combine",
    "he_agg.endorsement",
    "he_agg.envelope",
    "he_agg.packing",
    "he_agg.plain",
    "he_agg.public",
    "he_agg.wellformed",
)


def standby(port: int) -> None:
    """The standby's life: import, wait for the go (a line of JSON: extra environment
    variables; end of input: go away), then serve like ``uvicorn --factory``."""
    for name in _PRELOAD:
        importlib.import_module(name)
    line = sys.stdin.readline()
    if not line:
        return
    os.environ.update(json.loads(line))
    import uvicorn

    uvicorn.run(
        "he_agg.server:create_app", factory=True, host="127.0.0.1", port=port, log_level="warning"
    )


class WarmServer(ServerProcess):
    """A plain-http :class:`ServerProcess` that restarts from a waiting standby; like it,
    a process gets the HE_AGG_* variables of ``os.environ`` as they are at ``start()``."""

    def __init__(self, data_dir: Path, admin_keys: list[str], port: int) -> None:
        super().__init__(data_dir, admin_keys, port)
        self.cold = False  # the next start from nothing, as ServerProcess does
        self._standby: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {  # armed only by its go line, never by what was armed when it was spawned
            **{k: v for k, v in os.environ.items() if k != "HE_AGG_CRASH_AT"},
            "HE_AGG_DATA_DIR": str(self.data_dir),
            "HE_AGG_ADMIN_KEYS": json.dumps(self.admin_keys),
            "HE_AGG_TICK_SECONDS": "0.2",
        }
        command = [sys.executable, "-m", "clients.bench.reliability_server", str(self.port)]
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                command, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT
            )

    def start(self) -> None:
        if self.cold:
            super().start()
        else:
            standby = self._standby or self._spawn()
            assert standby.stdin is not None
            ours = {k: v for k, v in os.environ.items() if k.startswith("HE_AGG_")}
            standby.stdin.write((json.dumps(ours) + "\n").encode())
            standby.stdin.close()
            self.process = standby
            self._standby = None
            self._wait_for_health()
        if self._standby is None:  # (a cold start leaves the waiting one for next time)
            self._standby = self._spawn()  # the next incarnation imports while this one serves

    def _wait_for_health(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{self.url}/health").status_code == 200:
                        return
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
                time.sleep(0.02)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        super().stop()
        if self._standby is not None:
            standby, self._standby = self._standby, None
            if standby.stdin is not None:
                standby.stdin.close()  # end of input: it exits
            try:
                standby.wait(timeout=30)
            except subprocess.TimeoutExpired:
                standby.kill()


if __name__ == "__main__":
    standby(int(sys.argv[1]))
