"""The aggregator as a separate uvicorn process on loopback: a harness for the tests, the
benchmarks and the pilot (production runs ``he-agg serve``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from he_agg.api.transport import ssl_context

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """``start`` waits for /health; ``kill`` is kill -9; ``stop`` asks politely first.
    With ``tls`` (certificate, key) it serves https, and ``url`` is https://127.0.0.1:PORT."""

    def __init__(
        self,
        data_dir: Path,
        admin_keys: list[str],
        port: int | None = None,
        database: str | None = None,
        *,
        tls: tuple[Path, Path] | None = None,
        ca_file: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: more settings (HE_AGG_…) for this process, say a replica's name."""
        self.data_dir = data_dir
        self.env = env or {}
        self.tls = tls  # (certificate, key): serve https
        # the CA the health wait (and the harness's parties) trust; a self-signed
        # certificate is its own CA, the default
        self.ca_file = ca_file if ca_file is not None or tls is None else tls[0]
        self.database = database  # a URL; None: SQLite in data_dir
        self.port = port or free_port()
        self.admin_keys = admin_keys
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        command = [
            *(sys.executable, "-m", "uvicorn", "--factory", "he_agg.server:create_app"),
            *("--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"),
        ]
        if self.tls is not None:
            cert, key = self.tls
            command += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        return command

    def start(self) -> None:
        env = {
            **os.environ,
            "HE_AGG_DATA_DIR": str(self.data_dir),
            "HE_AGG_ADMIN_KEYS": json.dumps(self.admin_keys),
            "HE_AGG_TICK_SECONDS": "0.2",
            **self.env,
        }
        if self.database:
            env["HE_AGG_DATABASE"] = self.database
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self._command(), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        verify = ssl_context(self.ca_file) if self.ca_file is not None else False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.url}/health", timeout=1, verify=verify)
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        """kill -9: no shutdown handlers, no flushing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
