"""Part 2 of the torture harness: hostile input against a live server.

Three sources, one after another, against a federation whose committee finished its DKG
and then went quiet (so nothing but the fuzzer writes to the server meanwhile):

* hypothesis-made **envelopes**: mutations of a valid upload (truncated, extended, header
  fields overwritten, bits flipped, a word past its prime, bytes replaced, other
  manifests, a signature over other bytes, a signed length that is not the body's), each
  signed by the client whose path it names and sent to a live round;
* **unsigned** requests drawn by schemathesis from ``/openapi.json``, positive and negative;
* **signed** schemathesis requests, each signed by the role its route serves (admin,
  member 1 or a client) with the path parameters pinned to the live federation, round,
  client and members, so they reach the handlers.

After every request the harness counts the rows of the server's tables (the nonces
aside: every signed request spends one by design) and the files of its blob folder; what
a rejected request (any 4xx) added is reported, and must be nothing. Every answer is also
run through schemathesis's response checks (status, content type, headers and schema
conformance), reported as information. The server's RSS is sampled throughout.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import numpy as np

from clients.bench.reliability_common import (
    Figure,
    MemorySampler,
    ServerFiles,
    rss_bytes,
)
from clients.harness import LocalFederation
from clients.participant import Participant
from clients.upload import prepare_upload
from he_agg.api import paths
from he_agg.api.transport import SignedClient
from he_agg.errors import ServiceError
from he_agg.params import derive_parameters
from he_agg.wording import counted
from keys.identity import load_identity

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = ["FuzzConfig", "FuzzFigures", "Mutation", "apply_mutation", "run_fuzz"]

_FEDERATION = "fuzz"
_CLIENTS = [f"client-{i}" for i in range(8)]
_HEADER = struct.Struct("<4sHH32sQQId")  # the envelope's fixed header (he_agg.envelope)
_FIELDS = {  # name: (offset, struct format)
    "magic": (0, "<4s"),
    "version": (4, "<H"),
    "header_length": (6, "<H"),
    "epoch": (40, "<Q"),
    "round": (48, "<Q"),
    "count": (56, "<I"),
    "scale": (60, "<d"),
    "federation_length": (68, "<B"),
}
_MiB = 1 << 20
_T = TypeVar("_T")


@dataclass(frozen=True)
class FuzzConfig:
    requests: int = 100_000
    unsigned_share: float = 0.15
    envelope_share: float = 0.25
    seed: int = 0
    checks: bool = True  # run schemathesis's response checks on every answer


@dataclass(frozen=True)
class Mutation:
    """One change to a valid envelope (and to what is signed), drawn by hypothesis."""

    kind: str
    offset: int = 0
    data: bytes = b""
    value: Any = None


def apply_mutation(
    mutation: Mutation, valid: bytes, manifest: str
) -> tuple[bytes, str, bytes | None, int | None]:
    """(body, manifest, signed body, signed length) after ``mutation``: the signature
    covers the sent body and its length unless the mutation is about exactly that."""
    body = bytearray(valid)
    fed_length = valid[_HEADER.size]
    client_at = _HEADER.size + 1 + fed_length
    header_length = client_at + 1 + valid[client_at]
    kind, offset = mutation.kind, mutation.offset
    if kind == "truncate":
        body = body[: offset % len(valid)]
    elif kind == "extend":
        body += mutation.data
    elif kind == "field":
        position, layout = _FIELDS[str(mutation.data.decode())]
        struct.pack_into(layout, body, position, mutation.value)
    elif kind == "flip_header":
        for bit in mutation.value:
            body[(bit // 8) % header_length] ^= 1 << (bit % 8)
    elif kind == "word_past_prime":  # 8 bytes of ones cover at least one whole word
        start = header_length + offset % (len(valid) - header_length - 8)
        body[start : start + 8] = b"\xff" * 8
    elif kind == "replace_bytes":
        start = offset % len(valid)
        body[start : start + len(mutation.data)] = mutation.data
    elif kind == "identifier":
        federation = bytes(valid[_HEADER.size + 1 : client_at])
        client = bytes(valid[client_at + 1 : header_length])
        names = (mutation.data, client)
        if mutation.value == "client":
            names = (federation, mutation.data)
        tail = b"".join(bytes([len(n) % 256]) + n for n in names)
        fixed = bytearray(valid[: _HEADER.size])
        struct.pack_into("<H", fixed, 6, (_HEADER.size + len(tail)) % 65536)
        body = fixed + tail + bytearray(valid[header_length:])
    elif kind == "twice":
        body += valid
    elif kind == "empty":
        body = bytearray()
    elif kind == "manifest":
        return bytes(valid), str(mutation.value), None, None
    elif kind == "signed_other_bytes":
        return bytes(valid), manifest, bytes(mutation.data) or b"\x00", None
    elif kind == "signed_other_length":
        return bytes(valid), manifest, None, int(mutation.value)
    return bytes(body), manifest, None, None


def _draw(
    strategy: SearchStrategy[_T], use: Callable[[_T], None], examples: int, seed: int
) -> None:
    """Draw up to ``examples`` values of ``strategy`` (generation only: nothing is shrunk or
    replayed) and hand each to ``use``. A strategy with nothing to draw is skipped."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as seeded
    from hypothesis.errors import Unsatisfiable

    test = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(use))
    with contextlib.suppress(Unsatisfiable):  # e.g. negative cases of a route without input
        seeded(seed)(test)()


def _mutations() -> SearchStrategy[Mutation]:
    """The hypothesis strategy of :class:`Mutation` (imported lazily: a dev dependency)."""
    from hypothesis import strategies as st

    def field_values(name: str) -> Any:
        layouts: dict[str, Any] = {
            "magic": st.binary(min_size=4, max_size=4),
            "version": st.integers(0, 0xFFFF),
            "header_length": st.integers(0, 0xFFFF),
            "epoch": st.integers(0, 2**64 - 1),
            "round": st.integers(0, 2**64 - 1),
            "count": st.integers(0, 2**32 - 1),
            "scale": st.floats(allow_nan=True, allow_infinity=True),
            "federation_length": st.integers(0, 255),
        }
        return layouts[name].map(lambda v: Mutation("field", data=name.encode(), value=v))

    offsets = st.integers(0, 2**31)
    header_text = st.characters(min_codepoint=32, max_codepoint=126)  # what a header carries
    return st.one_of(
        offsets.map(lambda o: Mutation("truncate", o)),
        st.binary(min_size=1, max_size=256).map(lambda d: Mutation("extend", data=d)),
        st.sampled_from(sorted(_FIELDS)).flatmap(field_values),
        st.lists(st.integers(0, 8 * 512), min_size=1, max_size=16).map(
            lambda bits: Mutation("flip_header", value=tuple(bits))
        ),
        offsets.map(lambda o: Mutation("word_past_prime", o)),
        st.tuples(offsets, st.binary(min_size=1, max_size=64)).map(
            lambda p: Mutation("replace_bytes", p[0], p[1])
        ),
        st.tuples(st.sampled_from(["federation", "client"]), st.binary(max_size=300)).map(
            lambda p: Mutation("identifier", data=p[1], value=p[0])
        ),
        st.just(Mutation("twice")),
        st.just(Mutation("empty")),
        st.one_of(st.text(header_text, max_size=200), st.just("{}"), st.just("")).map(
            lambda m: Mutation("manifest", value=m)
        ),
        st.binary(max_size=64).map(lambda d: Mutation("signed_other_bytes", data=d)),
        st.integers(0, 2**62).map(lambda n: Mutation("signed_other_length", value=n)),
    )


@dataclass(frozen=True)
class FuzzFigures:
    requests: int
    by_source: dict[str, int]
    statuses: dict[str, int]
    server_errors: int  # 5xx answers, or a Traceback in a body
    no_answer: int  # the connection failed (the server may have died)
    server_deaths: int
    rejected: int
    rows_by_rejected: int
    blobs_by_rejected: int
    accepted: int
    reached_handlers: float  # signed schemathesis answers other than 401/403/404
    rss_start_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    conformance: dict[str, int]  # schemathesis findings: "title: METHOD path" → answers
    duration_s: float
    examples: list[str] = field(default_factory=list)  # a few failing requests
    findings: list[str] = field(default_factory=list)  # the first answer of each finding
    unsendable: int = 0  # drawn requests httpx would not send (e.g. bad header values)

    def _conformance_summary(self) -> str:
        """Per check: how many operations, how many answers."""
        operations: Counter[str] = Counter()
        answers: Counter[str] = Counter()
        for where, count in self.conformance.items():
            title = where.split(": ", 1)[0]
            operations[title] += 1
            answers[title] += count
        return "; ".join(
            f"{title}: {counted(operations[title], 'operation')} "
            f"({counted(answers[title], 'answer')})"
            for title in operations
        )

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_start_mb

    def figures(self) -> list[Figure]:
        sources = ", ".join(f"{k} {v}" for k, v in self.by_source.items())
        return [
            Figure("fuzz", "requests", f"{self.requests} ({sources})", "≥ 100,000"),
            Figure(
                "fuzz",
                "5xx answers (or a traceback)",
                str(self.server_errors),
                "0",
                self.server_errors == 0 and self.server_deaths == 0,
            ),
            Figure(
                "fuzz",
                "rows / blobs written by rejected requests",
                f"{self.rows_by_rejected} / {self.blobs_by_rejected} (of {self.rejected} rejected)",
                "0 / 0",
                self.rows_by_rejected == 0 and self.blobs_by_rejected == 0,
            ),
            Figure(
                "fuzz",
                "server RSS growth (start → end, peak)",
                f"{self.rss_growth_mb:+.1f} MB ({self.rss_start_mb:.0f} → "
                f"{self.rss_end_mb:.0f} MB, peak {self.rss_peak_mb:.0f} MB)",
                "< 100 MB",
                self.rss_growth_mb < 100,
            ),
            Figure(
                "fuzz",
                "signed requests reaching a handler (not 401/403/404)",
                f"{100 * self.reached_handlers:.0f} %",
            ),
            Figure(
                "fuzz",
                "schemathesis conformance findings (details in the JSON)",
                self._conformance_summary() or "none",
            ),
        ]


def _snapshot(files: ServerFiles) -> tuple[dict[str, int], frozenset[str]]:
    return files.row_counts(), files.blob_paths()


def _orphans(files: ServerFiles, before: frozenset[str], after: frozenset[str]) -> list[str]:
    """Files that appeared and that no row names: a scratch file left behind, or a blob
    nothing refers to. A blob a row names was written by the server on purpose — an
    aggregate or a model, when the clock closed or published a round while the request
    was in flight — and is not the request's doing."""
    new = sorted(after - before)
    return [
        path
        for path in new
        if path.startswith("incoming") or not files.referenced(os.path.basename(path))
    ]


class _Fuzzer:
    """Sends requests and keeps the books: statuses, and what each rejected one wrote."""

    def __init__(self, federation: LocalFederation) -> None:
        self.federation = federation
        self.url = federation.server.url
        self.http = httpx.Client(timeout=60.0)
        self.files = ServerFiles(federation.server.data_dir)
        self.statuses: Counter[int] = Counter()
        self.by_source: Counter[str] = Counter()
        self.conformance: Counter[str] = Counter()
        self.examples: list[str] = []
        self.findings: list[str] = []  # the first of each conformance finding
        self.server_errors = self.no_answer = self.deaths = self.unsendable = 0
        self.rejected = self.rows_by_rejected = self.blobs_by_rejected = self.accepted = 0
        self.signed_answers = self.signed_reached = 0
        self._last = _snapshot(self.files)

    @property
    def sent(self) -> int:
        return sum(self.by_source.values())

    def send(
        self, source: str, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response | None:
        try:
            request = self.http.build_request(
                method, self.url + target, content=body, headers=headers
            )
            response = self.http.send(request)
        except (UnicodeEncodeError, httpx.InvalidURL, httpx.LocalProtocolError, ValueError):
            self.unsendable += 1  # httpx or h11 will not put it on the wire: not a request
            return None
        except httpx.TransportError as exc:
            self.by_source[source] += 1
            self._no_answer(f"{method} {target}: {type(exc).__name__}")
            return None
        self.by_source[source] += 1
        status = response.status_code
        self.statuses[status] += 1
        # a Python traceback, not the word: fuzzed names are echoed in 422 details
        if status >= 500 or b"Traceback (most recent call last)" in response.content:
            self.server_errors += 1
            self._example(f"{method} {target} → {status}: {response.text[:200]}")
        rows, blobs = _snapshot(self.files)
        if status >= 400:
            self.rejected += 1
            before_rows, before_blobs = self._last
            self.rows_by_rejected += sum(max(0, rows[t] - before_rows[t]) for t in rows)
            orphans = _orphans(self.files, before_blobs, blobs) if blobs != before_blobs else []
            self.blobs_by_rejected += len(orphans)
            grown = [t for t in rows if rows[t] > before_rows[t]]
            if grown or orphans:
                self._example(f"{method} {target} → {status} wrote {grown} or {orphans[:3]}")
        else:
            self.accepted += 1
        self._last = rows, blobs
        if source == "signed":
            self.signed_answers += 1
            self.signed_reached += status not in (401, 403, 404)
        return response

    def resync(self) -> None:
        """After the harness itself changed the server (opened a round): the new baseline."""
        self._last = _snapshot(self.files)

    def _no_answer(self, what: str) -> None:
        self.no_answer += 1
        self._example(what)
        process = self.federation.server.process
        if process is not None and process.poll() is not None:
            self.deaths += 1
            self.federation.server.start()
        self._last = _snapshot(self.files)

    def _example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    def close(self) -> None:
        self.http.close()
        self.files.close()


class _Envelopes:
    """A valid envelope of one client for a live round, and a fresh one whenever a
    mutation happened to be valid too (the server then holds that client's upload)."""

    def __init__(self, federation: LocalFederation, fuzzer: _Fuzzer) -> None:
        self.federation = federation
        self.fuzzer = fuzzer
        self.admin = federation.admin_api()
        rng = np.random.default_rng(0)
        self.update = {"w": rng.uniform(-1, 1, 1500)}
        self.used: set[tuple[int, str]] = set()
        self.round = 0
        self.client = ""
        self.body = b""
        self.manifest = ""
        self.signers: dict[str, SignedClient] = {}
        self.participants: dict[str, Participant] = {}
        self.next_target()

    def next_target(self) -> None:
        free = [c for c in _CLIENTS if (self.round, c) not in self.used]
        if not self.round or not free:
            self.round = self.admin.open_round(_FEDERATION, 7 * 86_400).number
            self.fuzzer.resync()
            free = list(_CLIENTS)
        self.client = free[0]
        participant = self.participant(self.client)
        public = participant.fetch_public_context()
        assert participant.roster is not None
        body, manifest = prepare_upload(
            self.update,
            10.0,
            public,
            federation=_FEDERATION,
            round=self.round,
            client=self.client,
            epoch=participant.round_status(self.round).epoch,
            roster_digest=participant.roster.digest,
        )
        self.body, self.manifest = body, manifest.to_header()

    def participant(self, name: str) -> Participant:
        if name not in self.participants:
            self.participants[name] = self.federation.participant(name)
        return self.participants[name]

    def signer(self, name: str) -> SignedClient:
        if name not in self.signers:
            signing = self.federation.identities[name].signing
            self.signers[name] = SignedClient(self.federation.server.url, signing, retries=0)
        return self.signers[name]

    def send(self, mutation: Mutation) -> None:
        body, manifest, signed_body, signed_length = apply_mutation(
            mutation, self.body, self.manifest
        )
        target = paths.update(_FEDERATION, self.round, self.client)
        headers = self.signer(self.client).headers(
            "PUT", target, body if signed_body is None else signed_body, manifest
        )
        if signed_length is not None:
            headers["x-he-agg-content-length"] = str(signed_length)
        headers["content-type"] = "application/octet-stream"
        response = self.fuzzer.send("envelopes", "PUT", target, body, headers)
        if response is not None and response.status_code < 300:
            self.used.add((self.round, self.client))
            self.next_target()

    def close(self) -> None:
        for participant in self.participants.values():
            participant.close()
        for signer in self.signers.values():
            signer.close()


_MEMBER_ROUTES = ("/keygen", "/decryption", "/endorsements", "/aggregate")
_ADMIN_POSTS = ("/v1/federations", "/epochs", "/rounds", "/close")


def _role(method: str, path: str) -> str:
    """Which party a signed request to this route is signed by."""
    if path.endswith("/updates/{client}"):
        return "client" if method == "put" else "member"
    if any(part in path for part in _MEMBER_ROUTES):
        return "member"
    if path == "/metrics" or (method == "post" and path.endswith(_ADMIN_POSTS)):
        return "admin"
    return "reader"


class _Schemathesis:
    """schemathesis cases for every operation of the served document, sent unsigned or
    signed by the route's role with live path parameters."""

    def __init__(
        self, federation: LocalFederation, fuzzer: _Fuzzer, seed: int, checks: bool
    ) -> None:
        import schemathesis
        from schemathesis.core.result import Ok

        self.federation = federation
        self.fuzzer = fuzzer
        self.seed = seed
        self.checks = checks
        self.schema = schemathesis.openapi.from_url(federation.server.url + "/openapi.json")
        self.operations = [
            result.ok() for result in self.schema.get_all_operations() if isinstance(result, Ok)
        ]
        member = load_identity(
            federation.root / "member-1" / "member.identity", federation.passphrase
        )
        url = federation.server.url
        self.signers = {
            "admin": SignedClient(url, federation.admin.signing, retries=0),
            "member": SignedClient(url, member.signing, retries=0),
            "client": SignedClient(url, federation.identities[_CLIENTS[0]].signing, retries=0),
        }
        self.live_round = 0
        self.readers = 0

    def pinned(self) -> dict[str, Any]:
        """Path parameters of live resources (a round that is open, reopened if closed)."""
        state = self.fuzzer.files.round_state(_FEDERATION, self.live_round)[0]
        if state != "open":
            try:
                admin = self.federation.admin_api()
                self.live_round = admin.open_round(_FEDERATION, 7 * 86_400).number
                self.fuzzer.resync()
            except ServiceError:  # τ promised, or a DKG under way: keep the old one
                pass
        return {
            "federation_id": _FEDERATION,
            "number": self.live_round,
            "client": _CLIENTS[0],
            "member": 1,
            "sender": 1,
            "recipient": 2,
            "attempt": 1,
        }

    def run(self, source: str, budget: int, on_request: Callable[[], None]) -> None:
        """Send ``budget`` requests: passes over every operation, positive cases then
        negative ones, until the budget is spent (or a pass draws nothing at all)."""
        from schemathesis import GenerationMode

        stop = self.fuzzer.sent + budget
        passes = 0
        while self.fuzzer.sent < stop:
            started = self.fuzzer.sent
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                left = stop - self.fuzzer.sent
                examples = max(1, min(100, math.ceil(left / len(self.operations))))
                for operation in self.operations:
                    if self.fuzzer.sent >= stop:
                        break
                    send = self._sender(source, operation, stop, on_request)
                    pins = self._pins(operation) if source == "signed" else None
                    strategy = operation.as_strategy(mode, path_parameters=pins)
                    _draw(strategy, send, examples, self.seed + passes)
                passes += 1
            if self.fuzzer.sent == started:
                break  # nothing more can be drawn

    def _pins(self, operation: Any) -> dict[str, Any] | None:
        """Signed requests reach live resources: their path parameters are pinned."""
        names = {p.name for p in operation.path_parameters}
        pinned = {k: v for k, v in self.pinned().items() if k in names}
        return pinned or None

    def _sender(
        self, source: str, operation: Any, stop: int, on_request: Callable[[], None]
    ) -> Callable[[Any], None]:
        role = _role(operation.method, operation.path) if source == "signed" else None

        def send(case: Any) -> None:
            if self.fuzzer.sent < stop:
                self._send(source, case, role)
                on_request()

        return send

    def _send(self, source: str, case: Any, role: str | None) -> None:
        kwargs = case.as_transport_kwargs(base_url=self.federation.server.url)
        url = httpx.URL(kwargs["url"], params=kwargs.get("params") or {})
        if "json" in kwargs:
            import json

            body = json.dumps(kwargs["json"]).encode()
        else:
            raw = kwargs.get("data") or kwargs.get("content") or b""
            body = raw.encode() if isinstance(raw, str) else bytes(raw)
        target = url.raw_path.decode()
        headers = {k: v for k, v in kwargs["headers"].items() if isinstance(v, str)}
        if role is not None:
            if role == "reader":  # any party may read: take turns
                role = ("admin", "member", "client")[self.readers % 3]
                self.readers += 1
            headers.update(self.signers[role].headers(kwargs["method"], target, body))
        response = self.fuzzer.send(source, kwargs["method"], target, body, headers)
        if response is not None and self.checks:
            self._check(case, response)

    def _check(self, case: Any, response: httpx.Response) -> None:
        from schemathesis.checks import CHECKS
        from schemathesis.core.failures import Failure, FailureGroup

        try:
            # all of schemathesis's checks: conformance, negative data rejected, positive
            # data accepted, missing headers, unsupported methods, auth ignored, ...
            case.validate_response(response, checks=CHECKS.get_all())
        except FailureGroup as group:
            for failure in group.exceptions:
                self._finding(case, failure)
        except Failure as failure:
            self._finding(case, failure)
        except Exception as exc:  # a check that cannot run on this case is a finding too
            where = f"check error {type(exc).__name__}: {case.method.upper()} {case.path}"
            if where not in self.fuzzer.conformance:
                self.fuzzer.findings.append(f"{where}: {str(exc)[:300]}")
            self.fuzzer.conformance[where] += 1

    def _finding(self, case: Any, failure: Any) -> None:
        where = f"{failure.title}: {case.method.upper()} {case.path}"
        if where not in self.fuzzer.conformance:
            self.fuzzer.findings.append(f"{where}: {failure.message[:300]}")
        self.fuzzer.conformance[where] += 1

    def close(self) -> None:
        for signer in self.signers.values():
            signer.close()


def run_fuzz(
    config: FuzzConfig, root: Path, on_request: Callable[[], None] = lambda: None
) -> FuzzFigures:
    """Send ``config.requests`` hostile requests and report what the server did."""
    started = time.monotonic()
    params = derive_parameters(
        # τ: every open round reserves one decryption, and the fuzz opens a round each time
        # its mutations turn out valid for every client (hundreds of rounds in 100,000
        # requests; τ = 64 ran out and the federation started a rekey its stopped committee
        # could not finish); a large τ changes nothing else in this set (N, primes)
        "torture-fuzz",
        k_max=16,
        committee_max=3,
        value_bits=12,
        tau=65536,
        proofs=False,
    )
    federation = LocalFederation(
        root, _FEDERATION, _CLIENTS, params=params, members=3, threshold=2, k_min=2
    )
    federation.start()
    for agent in federation.processes:  # the DKG is done: nothing else writes from now on
        agent.terminate()
        agent.wait(timeout=30)
    fuzzer = _Fuzzer(federation)
    envelopes = _Envelopes(federation, fuzzer)
    drawn = _Schemathesis(federation, fuzzer, config.seed, config.checks)
    assert federation.server.process is not None
    pid = federation.server.process.pid
    sampler = MemorySampler(pid).start()
    rss_start = rss_bytes(pid)
    try:
        envelope_budget = round(config.requests * config.envelope_share)
        unsigned_budget = round(config.requests * config.unsigned_share)

        def mutate(mutation: Mutation) -> None:
            if fuzzer.sent < envelope_budget:
                envelopes.send(mutation)
                on_request()

        passes = 0
        while fuzzer.sent < envelope_budget:
            examples = min(1000, envelope_budget - fuzzer.sent)
            _draw(_mutations(), mutate, examples, config.seed + passes)
            passes += 1
        drawn.run("unsigned", unsigned_budget, on_request)
        drawn.run("signed", config.requests - fuzzer.sent, on_request)
    finally:
        sampler.stop()
        rss_end = rss_bytes(pid)
        envelopes.close()
        drawn.close()
        fuzzer.close()
        federation.stop()
    return FuzzFigures(
        requests=fuzzer.sent,
        by_source=dict(fuzzer.by_source),
        statuses={str(k): v for k, v in sorted(fuzzer.statuses.items())},
        server_errors=fuzzer.server_errors,
        no_answer=fuzzer.no_answer,
        server_deaths=fuzzer.deaths,
        rejected=fuzzer.rejected,
        rows_by_rejected=fuzzer.rows_by_rejected,
        blobs_by_rejected=fuzzer.blobs_by_rejected,
        accepted=fuzzer.accepted,
        reached_handlers=fuzzer.signed_reached / max(1, fuzzer.signed_answers),
        rss_start_mb=rss_start / _MiB,
        rss_end_mb=rss_end / _MiB,
        rss_peak_mb=sampler.peak / _MiB,
        conformance=dict(fuzzer.conformance.most_common()),
        duration_s=time.monotonic() - started,
        examples=fuzzer.examples,
        findings=fuzzer.findings,
        unsendable=fuzzer.unsendable,
    )
