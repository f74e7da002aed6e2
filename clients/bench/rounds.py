"""One measured round per federation kind for ``he-agg bench``: he-agg's CKKS stage by
stage, plaintext FedAvg through the same server, and TenSEAL's ``ckks_vector`` baselines.

Aggregation and decryption are timed in this process with the functions the server and the
members run, on the committee's real key shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from clients.bench.bench_report import STAGES
from clients.harness.local import LocalFederation
from he_agg import ckks_encoder
from he_agg.aggregate import RunningSum
from he_agg.api import paths
from he_agg.api.states import FederationMode
from he_agg.api.transport import SignedClient
from he_agg.combine import average_from_shares
from he_agg.encoding import blocks
from he_agg.envelope import Upload, decode_upload, encode_upload
from he_agg.packing import flatten, weighted_vector
from he_agg.params import ParameterSet
from he_agg.plain import decode_plain_upload, encode_plain_upload
from he_agg.public import PublicContext
from he_agg.rlwe import sample_witness
from he_agg.seal_encryption import encrypt_divided, key_level_rows
from keys.decrypt import decryption_share
from keys.member import MemberSecrets

__all__ = ["PLAIN_STAGES", "BenchFederations", "ckks_round", "plain_round", "tenseal_round"]

PLAIN_STAGES = ["serialize", "upload", "aggregate"]
Vector = npt.NDArray[np.float64]


class BenchFederations:
    """Two federations on one aggregator process: CKKS and plaintext."""

    def __init__(self, root: Path, params: ParameterSet, max_clients: int, max_size: int) -> None:
        names = [f"client-{i}" for i in range(max_clients + 1)]  # +1: no round closes
        self.params = params
        self.ckks = LocalFederation(
            root / "ckks", "bench", names, params=params, k_min=1, max_parameters=max_size + 10
        )
        self.ckks.start()
        self.plain = LocalFederation(
            root / "plain",
            "bench-plain",
            names,
            params=params,
            mode=FederationMode.PLAINTEXT,
            k_min=1,
            max_parameters=max_size + 10,
        )
        self.plain.start()
        with self.ckks.participant(names[0]) as participant:
            self.public: PublicContext = participant.fetch_public_context()
        state = root / "ckks" / "member-{}" / "state" / "member.key"
        self.shares = [
            MemberSecrets.load(
                Path(str(state).format(i)), self.ckks.passphrase, params
            ).threshold_share
            for i in (1, 2)
        ]
        self.senders: dict[tuple[str, str], SignedClient] = {}

    def sender(self, local: LocalFederation, name: str) -> SignedClient:
        key = (local.federation, name)
        if key not in self.senders:
            self.senders[key] = SignedClient(local.server.url, local.identities[name].signing)
        return self.senders[key]

    @staticmethod
    def open_round(local: LocalFederation) -> int:
        return local.admin_api().open_round(local.federation, 24 * 3600).number

    def upload_all(
        self, local: LocalFederation, number: int, bodies: list[bytes], manifest: str, threads: int
    ) -> float:
        """Every client's PUT at once (``threads`` in flight); wall-clock seconds."""
        names = list(local.identities)

        def send(index: int) -> None:
            path = paths.update(local.federation, number, names[index])
            self.sender(local, names[index]).request(
                "PUT", path, content=bodies[index], manifest=manifest
            )

        start = time.perf_counter()
        with ThreadPoolExecutor(min(threads, len(bodies))) as pool:
            list(pool.map(send, range(len(bodies))))
        return time.perf_counter() - start

    def stop(self) -> None:
        for sender in self.senders.values():
            sender.close()
        self.ckks.stop()
        self.plain.stop()


def _encrypt_stages(h: BenchFederations, vector: Vector, t: dict[str, float]) -> npt.NDArray[Any]:
    """The native backend's two steps timed apart: encode, then SEAL's public-key encryption
    (he_agg.seal_encryption, sampling included)."""
    weighted = weighted_vector(vector, 1.0, h.params)
    key = key_level_rows(h.public)
    start = time.perf_counter()
    plains = ckks_encoder.encode(blocks(weighted, h.params.slots), h.params)
    t["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    witness = sample_witness(plains.shape[0], h.params)
    words = encrypt_divided(plains, key, witness, h.params)
    t["encrypt"] = time.perf_counter() - start
    return words


def ckks_round(h: BenchFederations, vector: Vector, clients: int, threads: int) -> dict[str, Any]:
    params = h.params
    t: dict[str, float] = {}
    words = _encrypt_stages(h, vector, t)
    names = list(h.ckks.identities)
    number = h.open_round(h.ckks)
    start = time.perf_counter()
    first = encode_upload(Upload("bench", number, names[0], params.scale, words), params)
    t["serialize"] = time.perf_counter() - start
    bodies = [first] + [
        encode_upload(Upload("bench", number, n, params.scale, words), params)
        for n in names[1:clients]
    ]
    manifest = flatten({"values": vector})[1].to_header()
    t["upload"] = h.upload_all(h.ckks, number, bodies, manifest, threads)
    start = time.perf_counter()
    running = RunningSum(params, words.shape[0])
    for body in bodies:
        running.add(decode_upload(body, params, federation="bench").words)
    aggregate = running.result()
    t["aggregate"] = time.perf_counter() - start
    digest = hashlib.sha256(aggregate.tobytes()).digest()
    start = time.perf_counter()
    share = decryption_share(h.shares[0], aggregate[:, 1], (1, 2), params, digest)
    t["partial_decrypt"] = time.perf_counter() - start
    other = decryption_share(h.shares[1], aggregate[:, 1], (1, 2), params, digest)
    start = time.perf_counter()
    average = average_from_shares(aggregate[:, 0], [share, other], params, vector.size)
    t["combine_decode"] = time.perf_counter() - start
    t["round"] = sum(t[s] for s in STAGES)
    return {
        "seconds": t,
        "upload_bytes": len(first),
        "share_bytes": len(share.to_bytes(params)),
        "max_error": float(np.abs(average - vector).max()),
    }


def plain_round(h: BenchFederations, vector: Vector, clients: int, threads: int) -> dict[str, Any]:
    t: dict[str, float] = {}
    start = time.perf_counter()
    body = encode_plain_upload(weighted_vector(vector, 1.0, h.params))
    t["serialize"] = time.perf_counter() - start
    manifest = flatten({"values": vector})[1].to_header()
    t["upload"] = h.upload_all(h.plain, h.open_round(h.plain), [body] * clients, manifest, threads)
    start = time.perf_counter()
    total = np.zeros(vector.size + 1)
    for _ in range(clients):
        total += decode_plain_upload(body)
    t["aggregate"] = time.perf_counter() - start
    t["round"] = sum(t[s] for s in PLAIN_STAGES)
    return {"seconds": t, "upload_bytes": len(body)}


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence TenSEAL's C++ warning about vectors larger than one ciphertext (it writes
    straight to file descriptor 1, past Python's sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def tenseal_round(size: int, clients: int, bits: list[int]) -> dict[str, Any]:
    """TenSEAL's ckks_vector at N=8192 and scale 2^40 with the prime chain ``bits``."""
    import tenseal as ts

    context = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=bits)
    context.global_scale = 2**40
    values = np.random.default_rng(1).uniform(-1, 1, size).tolist()
    t: dict[str, float] = {}
    with quiet_stdout():
        start = time.perf_counter()
        vector = ts.ckks_vector(context, values)
        t["encrypt"] = time.perf_counter() - start
    start = time.perf_counter()
    blob = vector.serialize()
    t["serialize"] = time.perf_counter() - start
    with quiet_stdout():
        start = time.perf_counter()
        total = ts.ckks_vector_from(context, blob)
        for _ in range(clients - 1):
            total += ts.ckks_vector_from(context, blob)
        t["aggregate"] = time.perf_counter() - start
    t["round"] = sum(t.values())
    return {"seconds": t, "upload_bytes": len(blob)}
