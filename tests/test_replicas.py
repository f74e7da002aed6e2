"""Several `he-agg serve` replicas behind one address: one PostgreSQL database and one blob
folder shared, any replica accepting any request (a round-robin in front, as a load
balancer would be). Rounds publish the right model, members still check that the
aggregate is the exact sum of the signed uploads, and every replica took uploads."""

from __future__ import annotations

import functools
import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from clients.admin import Admin
from clients.harness import ServerProcess, federation_spec
from clients.participant import Participant
from he_agg.api.states import KeygenPhase, RoundState
from he_agg.api.transport import SignedClient
from he_agg.packing import flatten
from he_agg.params import derive_parameters
from keys.agent import MemberAgent, wait
from keys.identity import Identity

FED = "replicated"
CLIENTS = [f"bank-{i}" for i in range(1, 6)]
REPLICAS = 3


class RoundRobin(httpx.BaseTransport):
    """Sends each request to the next replica in turn; uploads take turns of their own, so
    every replica gets uploads however many other requests (long polls, reads) a client
    makes between them (one shared turn once sent all 8 uploads to two replicas)."""

    def __init__(self, urls: list[str]) -> None:
        self.targets = [httpx.URL(url) for url in urls]
        self.turn = itertools.count()
        self.upload_turn = itertools.count()
        self.inner = httpx.HTTPTransport()
        self.puts: Counter[int] = Counter()  # uploads per replica port
        self.closes: list[int] = []  # the replica port each close request went to

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        upload = request.method == "PUT" and "/updates/" in request.url.path
        turn = next(self.upload_turn if upload else self.turn)
        target = self.targets[turn % len(self.targets)]
        request.url = request.url.copy_with(host=target.host, port=target.port)
        if upload:
            self.puts[target.port or 0] += 1
        if request.method == "POST" and request.url.path.endswith("/close"):
            self.closes.append(target.port or 0)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, postgres) -> Iterator[list[ServerProcess]]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("replicas")
    database = postgres.new_schema_url()
    admin = Identity.generate(0)
    servers = [
        ServerProcess(
            tmp / f"replica-{i}",
            [admin.public.signing_key.hex()],
            database=database,
            env={
                "HE_AGG_BLOB_DIR": str(tmp / "blobs"),
                "HE_AGG_REPLICA": f"replica-{i}",
                "HE_AGG_PARTIAL_SECONDS": "0.2",  # tree aggregation: partial sums shared
                "HE_AGG_METRICS_OPEN": "1",
            },
        )
        for i in range(REPLICAS)
    ]
    for server in servers:
        server.start()
    servers[0].admin = admin  # type: ignore[attr-defined]
    servers[0].blobs = tmp / "blobs"  # type: ignore[attr-defined]
    yield servers
    for server in servers:
        server.stop()


def test_replicas_share_rounds_and_publish_the_exact_sum(
    replicas: list[ServerProcess], tmp_path: Path
) -> None:
    admin: Identity = replicas[0].admin  # type: ignore[attr-defined]
    front = RoundRobin([server.url for server in replicas])
    url = replicas[0].url  # rewritten per request by the round-robin
    clients = {name: Identity.generate(0) for name in CLIENTS}
    members = [Identity.generate(i) for i in (1, 2, 3)]
    params = derive_parameters(
        "replica-test", k_max=8, committee_max=3, value_bits=12, proofs=False
    )
    operator = Admin(url, admin.signing, transport=front)
    ports = [httpx.URL(server.url).port for server in replicas]
    spec = federation_spec(
        FED,
        {n: i.public for n, i in clients.items()},
        [m.public for m in members],
        params=params,
        threshold=2,
        k_min=3,
        max_parameters=5000,
        share_timeout=10,
    )
    operator.create_federation(spec)
    roster = operator.roster(FED)
    stop = threading.Event()
    threads = []
    for member in members:
        agent = MemberAgent(
            SignedClient(url, member.signing, transport=front),
            FED,
            member,
            tmp_path / f"member-{member.index}",
            "member passphrase",
            roster,
        )
        thread = threading.Thread(target=agent.run, kwargs={"stop": stop, "poll": 0.1})
        thread.start()
        threads.append(thread)
    try:
        ready = lambda: operator.federation(FED).keygen_phase == KeygenPhase.READY  # noqa: E731
        assert wait(ready, 120), "the committee's DKG did not finish across replicas"
        for round_seed in (1, 2):
            number = operator.open_round(FED, deadline_seconds=120).number
            puts_before = Counter(front.puts)
            rng = np.random.default_rng(round_seed)
            updates = []
            for name in CLIENTS[:4]:
                update = {"w": rng.uniform(-1, 1, 300).astype(np.float32)}
                samples = int(rng.integers(10, 50))
                participant = Participant(
                    url,
                    FED,
                    name,
                    clients[name].signing,
                    show_progress=False,
                    roster=roster,
                    transport=front,
                    spool_dir=tmp_path / "spool" / name,
                )
                participant.submit(update, samples, round=number)
                updates.append((flatten(update)[0], samples))
            # tree aggregation: every replica that stored an upload shares its partial sum,
            # and the closing replica adds the others' instead of re-reading their uploads
            storing = {port for port in front.puts if front.puts[port] > puts_before[port]}
            partials = replicas[0].blobs / "partials" / FED / str(number)  # type: ignore[attr-defined]
            names = {f"replica-{ports.index(port)}.sum" for port in storing}
            assert wait(functools.partial(_written, partials, names, set(CLIENTS[:4])), 30)
            merged_before = _merged(replicas)
            operator.close_round(FED, number)
            assert _merged(replicas) - merged_before == len(storing - {front.closes[-1]})
            assert not partials.exists()  # the closer removed the round's partials
            model = participant.wait_for_model(number, timeout=120)
            expected = np.average([v for v, _ in updates], axis=0, weights=[n for _, n in updates])
            total = sum(n for _, n in updates)
            assert np.abs(flatten(model)[0] - expected).max() <= params.error_bound(2) * 2 / total
            status = operator.round(FED, number)
            assert status.state == RoundState.PUBLISHED and len(status.uploads) == 4
        assert len(front.puts) == REPLICAS  # every replica took uploads
        assert sum(front.puts.values()) == 8
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        front.close()


def _merged(replicas: list[ServerProcess]) -> float:
    """Other replicas' partial sums added by closes, over every replica (/metrics)."""
    total = 0.0
    for server in replicas:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("he_agg_partial_sums_merged_total "):
                total += float(line.split()[1])
    return total


def _written(folder: Path, names: set[str], clients: set[str]) -> bool:
    """Every storing replica has written its partial, and together they hold every upload
    (so no replica has a newer sum to write after the close)."""
    held: set[str] = set()
    for path in folder.glob("*.sum"):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # being replaced
            return False
        length = int.from_bytes(data[8:12], "big")
        held |= set(json.loads(data[12 : 12 + length])["included"])
    return names <= {path.name for path in folder.glob("*.sum")} and held == clients
