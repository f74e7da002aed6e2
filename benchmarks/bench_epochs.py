"""The cost of a key-epoch switch: seconds from the admin's re-key request until the new
epoch is current, and the bytes its DKG moves.

A real federation on loopback (server under uvicorn, committee agents in their own
processes, polling every 0.2 s), the default parameter set. For each committee size it
re-keys ``--repeats`` times and reports the median switch time, with, as the baseline
measured in the same run, the median wall time of one HE round of a 100k-parameter model
with three clients (open, encrypt, upload, decrypt, publish).

Bytes are counted from what the server stored for the epoch's DKG: per member, what it
sends (commitment, public-key share, n Shamir shares, key statement) and what it
fetches (n public-key shares, the key, its n Shamir shares, the key statements).
Writes results/epochs.json.

    python benchmarks/bench_epochs.py [--committees 3:2,5:3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from clients.harness import LocalFederation
from clients.harness.signals import exit_on_sigterm
from he_agg.params import DEFAULT
from he_agg.server.keygen import COMMITMENT, PK_SHARE, SHAMIR, STATEMENT
from he_agg.server.store import FileBlobStore, SqlStore, sqlite_url

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
CLIENTS = ["bank-a", "bank-b", "bank-c"]


def _epoch_bytes(local: LocalFederation, epoch: int) -> dict[str, int]:
    """Bytes the DKG of ``epoch`` moved, from the server's own records."""
    data = local.root / "server"
    store = SqlStore(sqlite_url(data / "he-agg.sqlite3"))
    blobs = FileBlobStore(data / "blobs")
    try:

        def sizes(kind: str, blob: bool) -> list[int]:
            values = store.keygen_values(local.federation, epoch, kind).values()
            return [blobs.path(v).stat().st_size if blob else len(v) for v in values]

        commitment, statement = sizes(COMMITMENT, False), sizes(STATEMENT, False)
        pk_share, shamir = sizes(PK_SHARE, True), sizes(SHAMIR, True)
        row = store.epoch(local.federation, epoch)
        assert row is not None and row.public_key is not None
        key = blobs.path(row.public_key).stat().st_size
    finally:
        store.close()
    n = len(pk_share)
    sent = (sum(commitment) + sum(pk_share) + sum(shamir) + sum(statement)) // n
    fetched = sum(pk_share) + key + sum(shamir) // n + sum(statement)
    return {"members": n, "sent_per_member": sent, "fetched_per_member": fetched,
            "total": n * (sent + fetched)}  # fmt: skip


def _round_seconds(local: LocalFederation, seed: int) -> float:
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    number = local.admin_api().open_round(local.federation, deadline_seconds=300).number
    for name in CLIENTS:
        update = {"w": rng.normal(size=100_000)}
        local.participant(name).submit(update, 10_000.0, round=number)  # realistic counts
    local.participant(CLIENTS[0]).wait_for_model(number, timeout=300)
    return time.perf_counter() - start


def measure(members: int, threshold: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        local = LocalFederation(
            Path(folder), "bench-epochs", CLIENTS, members=members, threshold=threshold
        )
        with local:
            rounds = [_round_seconds(local, seed) for seed in range(repeats)]
            switches, volumes = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                target = local.admin_api().rekey(local.federation)[-1].epoch
                local.wait_for_epoch(target, timeout=600)
                switches.append(time.perf_counter() - start)
                volumes.append(_epoch_bytes(local, target))
            after = _round_seconds(local, 99)  # a round on the new key: nothing broke
    return {
        "members": members,
        "threshold": threshold,
        "switch_seconds_median": statistics.median(switches),
        "switch_seconds": switches,
        "round_seconds_median": statistics.median(rounds),
        "round_after_switch_seconds": after,
        "bytes": volumes[0],
    }


def main() -> None:
    exit_on_sigterm()  # its servers and members stop with it
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--committees", default="3:2,5:3", help="n:t pairs, comma separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = []
    for pair in args.committees.split(","):
        n, t = (int(x) for x in pair.split(":"))
        result = measure(n, t, args.repeats)
        results.append(result)
        b = result["bytes"]
        print(
            f"n={n} t={t}: switch {result['switch_seconds_median']:.2f} s (median of "
            f"{args.repeats}); one HE round {result['round_seconds_median']:.2f} s; "
            f"per member sent {b['sent_per_member'] / 1e6:.2f} MB, fetched "
            f"{b['fetched_per_member'] / 1e6:.2f} MB; all members {b['total'] / 1e6:.2f} MB"
        )
    out = HERE / "results" / "epochs.json"
    body = {"parameters": DEFAULT.name, "poly_degree": DEFAULT.poly_degree, "results": results}
    out.write_text(json.dumps(body, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
