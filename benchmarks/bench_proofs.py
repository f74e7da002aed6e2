"""The cost of proofs of well-formed uploads, per 1M parameters, on one core.

In the same run, on the default parameter set (which requires proofs): encryption without
proofs on that set's primes, by SEAL's own Encryptor (the SEAL backend) and by its formula
compiled (the native backend, which a federation with ``--no-proofs`` uses),
he_agg.rlwe's encryption (what the proofs speak of), proving, verifying one
upload, and a member's verification work for a round of K uploads (K verifications; the
uploads are a few distinct ones reused, since verification caches nothing). Also bytes:
ciphertexts, proofs, and both per parameter. Medians of ``--repeats``. Writes
results/proofs.json.

    python benchmarks/bench_proofs.py [--parameters 1000000] [--repeats 3] [--rounds 10,100]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: numpy's BLAS (the challenge products) too

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from he_agg import wellformed  # noqa: E402
from he_agg.backend import encrypt_vector, get_backend  # noqa: E402
from he_agg.backend.proven import encode_blocks  # noqa: E402
from he_agg.params import DEFAULT  # noqa: E402
from he_agg.rlwe import (  # noqa: E402
    encrypt_words,
    key_rows,
    sample_witness,
)
from keys.committee import run_committee_setup  # noqa: E402

__all__ = ["main"]

HERE = Path(__file__).resolve().parent


def _timed(work: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = work()
    return time.perf_counter() - start, out


SEAL, NATIVE = get_backend("seal"), get_backend("native")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parameters", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", default="10,100", help="K values for a member's round")
    args = parser.parse_args()
    wellformed.set_threads(1)  # one core: no threads for the commitments either
    params = DEFAULT
    setup = run_committee_setup(params, "bench-proofs", members=3, threshold=2)
    key = key_rows(setup.public)
    values = np.random.default_rng(0).uniform(-1, 1, args.parameters)
    context = wellformed.ProofContext(params.fingerprint, "bench", 0, 1, "bank", b"\x01" * 32)
    seal, native, own, prove, verify, attempts = [], [], [], [], [], []
    uploads = []
    for _ in range(args.repeats):
        seconds, _ = _timed(lambda: encrypt_vector(values, setup.public, backend=SEAL))
        seal.append(seconds)
        seconds, _ = _timed(lambda: encrypt_vector(values, setup.public, backend=NATIVE))
        native.append(seconds)
        plain = encode_blocks(values, setup.public)
        witness = sample_witness(plain.shape[0], params)
        seconds, words = _timed(lambda: encrypt_words(plain, key, witness, params))  # noqa: B023
        own.append(seconds)
        start = time.perf_counter()
        proofs = wellformed.prove_upload(words, witness, key, params, context, attempts)
        prove.append(time.perf_counter() - start)
        seconds, _ = _timed(
            lambda: wellformed.verify_upload(words, proofs, key, params, context)  # noqa: B023
        )
        verify.append(seconds)
        uploads.append((words, proofs))
    count = uploads[0][0].shape[0]
    cipher_bytes = count * 2 * params.poly_degree * sum(params.prime_bits) / 8
    proof_bytes = sum(len(p) for p in uploads[0][1])
    rounds = {}
    for k in (int(x) for x in args.rounds.split(",")):
        start = time.perf_counter()
        for i in range(k):
            words, proofs = uploads[i % len(uploads)]
            wellformed.verify_upload(words, proofs, key, params, context)
        rounds[k] = time.perf_counter() - start
    scale = 1e6 / args.parameters
    result = {
        "parameters": args.parameters,
        "ciphertexts": count,
        "set": {"poly_degree": params.poly_degree, "log2_q": params.modulus_bits},
        "seal_encrypt_s": statistics.median(seal) * scale,
        "native_encrypt_s": statistics.median(native) * scale,
        "rlwe_encrypt_s": statistics.median(own) * scale,
        "prove_s": statistics.median(prove) * scale,
        "verify_upload_s": statistics.median(verify) * scale,
        "attempts_mean": float(np.mean(attempts)),
        "attempts_predicted": 1
        / wellformed.proof_bounds(params, min(count, 256)).acceptance(params.poly_degree),
        "ciphertext_bytes_per_param": cipher_bytes / args.parameters,
        "proof_bytes_per_param": proof_bytes / args.parameters,
        "proof_over_ciphertext": proof_bytes / cipher_bytes,
        "member_round_s": {str(k): v * scale for k, v in rounds.items()},
    }
    print(json.dumps(result, indent=2))
    out = HERE / "results" / "proofs.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
