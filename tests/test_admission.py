"""Backpressure: the server admits a bounded number of upload bytes and uploads at once and
answers the rest 503 with Retry-After before reading their bodies; the SDK waits what it
is told (jittered), within a total deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from he_agg.api.transport import SignedClient
from he_agg.errors import ServiceError
from he_agg.server.admission import Admission
from he_agg.server.app import create_app
from he_agg.server.config import Settings
from tests.test_server_epochs import FED, _admin_key, _body


def test_admission_caps_bytes_and_uploads_and_releases_however_a_request_ends() -> None:
    gate = Admission(max_bytes=100, max_uploads=2, retry_after=3)
    with gate.admit(60):
        with pytest.raises(ServiceError) as busy, gate.admit(50):  # 110 bytes > 100
            pass
        assert busy.value.status == 503 and busy.value.retry_after == 3
        with gate.admit(40), pytest.raises(ServiceError), gate.admit(0):  # a third > 2
            pass
    assert (gate.bytes, gate.uploads) == (0, 0)
    with pytest.raises(RuntimeError), gate.admit(100):
        raise RuntimeError("the request failed")
    assert (gate.bytes, gate.uploads) == (0, 0)  # released anyway
    with gate.admit(10_000):  # alone, an upload larger than the cap still gets in
        assert gate.uploads == 1


def test_a_busy_server_answers_503_before_reading_the_body(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, admin_keys=[_admin_key()], max_inflight_uploads=1)
    app = create_app(settings)
    state = app.state.he_agg
    state.federations.create(_body(), _admin_key())
    key = Ed25519PrivateKey.generate()
    path = f"/v1/federations/{FED}/rounds/1/updates/bank-1"
    body = b"x" * 5000
    headers = SignedClient("http://x", key).headers("PUT", path, body, "{}")
    with TestClient(app) as client, state.admission.admit(1):  # one upload in flight
        response = client.put(path, content=body, headers=headers)
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert "busy" in response.json()["detail"]
    assert (state.admission.bytes, state.admission.uploads) == (0, 0)


def _busy_then_ok(busy: int, retry_after: str) -> tuple[httpx.MockTransport, list[float]]:
    times: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if len(times) <= busy:
            return httpx.Response(
                503, json={"detail": "busy"}, headers={"retry-after": retry_after}
            )
        return httpx.Response(201, json={"ok": True})

    return httpx.MockTransport(answer), times


def test_the_sdk_waits_what_a_busy_server_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """It waits what Retry-After says, jittered up by at most half (the waits asked of
    ``time.sleep`` are recorded, not slept: no timing on a shared machine)."""
    slept: list[float] = []
    monkeypatch.setattr("he_agg.api.transport.time.sleep", slept.append)
    transport, times = _busy_then_ok(2, "1")
    client = SignedClient("http://agg", Ed25519PrivateKey.generate(), transport=transport)
    assert client.request("PUT", "/x", content=b"abc").status_code == 201
    assert len(times) == 3 and len(slept) == 2 and all(1.0 <= s <= 1.5 for s in slept)


def test_the_sdk_gives_up_after_its_deadline() -> None:
    transport, times = _busy_then_ok(100, "2")
    client = SignedClient(
        "http://agg", Ed25519PrivateKey.generate(), transport=transport, busy_deadline=3.0
    )
    with pytest.raises(ServiceError) as busy:
        client.request("PUT", "/x", content=b"abc")
    assert busy.value.status == 503 and len(times) == 2  # 2 s waited; 2 more would pass 3 s


class _Body:
    """A request whose body arrives in ``sizes`` chunks, the i-th ``(i + 1) * gap`` seconds
    after the first read, through an ASGI ``receive`` that, like uvicorn's, loses nothing
    when it is cancelled (the bytes wait for the next call)."""

    reading = 0  # bodies inside receive() right now, over all bodies
    most = 0

    def __init__(self, sizes: list[int], gap: float) -> None:
        self.sizes, self.gap = sizes, gap
        self.next = 0
        self.start: float | None = None

    async def receive(self) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        self.start = loop.time() if self.start is None else self.start
        _Body.reading += 1
        _Body.most = max(_Body.most, _Body.reading)
        try:
            await asyncio.sleep(self.start + (self.next + 1) * self.gap - loop.time())
        finally:
            _Body.reading -= 1
        self.next += 1
        more = self.next < len(self.sizes)
        return {"type": "http.request", "body": b"x" * self.sizes[self.next - 1], "more_body": more}


def _drain(body: _Body, chunk_seconds: float, min_rate: float) -> int:
    from he_agg.server.bodies import paced

    settings = Settings(body_chunk_seconds=chunk_seconds, min_rate=min_rate)

    async def run() -> int:
        return sum([len(c) async for c in paced(body, settings)])  # type: ignore[arg-type]

    return asyncio.run(run())


def test_a_stalled_or_slow_body_is_refused_with_408() -> None:
    assert _drain(_Body([1000] * 5, 0.01), chunk_seconds=1.0, min_rate=1000) == 5000
    with pytest.raises(ServiceError) as stalled:
        _drain(_Body([10, 10], 0.5), chunk_seconds=0.2, min_rate=0)
    assert stalled.value.status == 408 and "no body data" in stalled.value.detail
    with pytest.raises(ServiceError) as slow:  # chunks on time, but 20 bytes/s on average
        _drain(_Body([1] * 40, 0.05), chunk_seconds=0.5, min_rate=100)  # a stall: 10 gaps
    assert slow.value.status == 408 and "slower than" in slow.value.detail


def test_upload_bodies_take_turns_and_the_wait_for_a_turn_is_not_held_against_them() -> None:
    """With one turn, three bodies are read one at a time; the time each spends queueing
    for the turn is not held against its chunk limit or its rate."""
    from he_agg.server.bodies import paced

    # each body sends 500 B/s: twice the minimum rate, a chunk every 0.2 s against a 0.48 s
    # limit (a stall of this process long enough to matter takes over a quarter second)
    settings = Settings(body_chunk_seconds=0.48, min_rate=250)

    async def drain(body: _Body, turns: asyncio.Semaphore, done: list[float]) -> int:
        total = sum([len(c) async for c in paced(body, settings, turns)])  # type: ignore[arg-type]
        done.append(time.monotonic())
        return total

    async def run(bodies: list[_Body], done: list[float]) -> list[int]:
        turns = asyncio.Semaphore(1)
        return list(await asyncio.gather(*(drain(b, turns, done) for b in bodies)))

    _Body.most = 0
    assert asyncio.run(run([_Body([100] * 5, 0.2) for _ in range(3)], [])) == [500] * 3
    assert _Body.most == 1  # never two bodies read at once

    # a slow client takes the turn first and has nothing for 1.5 s: it gives the turn back
    # every turn_seconds, so the fast body behind it is done long before
    settings = Settings(body_chunk_seconds=5, min_rate=0, turn_seconds=0.05)
    done: list[float] = []
    started = time.monotonic()
    assert asyncio.run(run([_Body([10], 1.5), _Body([100] * 5, 0.01)], done)) == [10, 500]
    assert done[0] - started < 0.75 and done[1] - started >= 1.5  # fast one first

    settings = Settings(body_chunk_seconds=0.2, min_rate=0, turn_seconds=0.05)
    one = asyncio.Semaphore(1)
    with pytest.raises(ServiceError) as stalled:  # a body's own stall still counts
        asyncio.run(drain(_Body([10, 10], 0.5), one, []))
    assert stalled.value.status == 408 and not one.locked()  # its turn was given back


def test_ready_is_not_health(tmp_path: Path) -> None:
    """/health is liveness; /ready also needs a writable store and room on the disk."""
    with TestClient(create_app(Settings(data_dir=tmp_path / "a"))) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"status": "ready"}
    full = Settings(data_dir=tmp_path / "b", min_free_bytes=1 << 62)  # more than any disk
    with TestClient(create_app(full)) as client:
        assert client.get("/health").status_code == 200
        refused = client.get("/ready")
        assert refused.status_code == 503 and "free" in refused.json()["detail"]
