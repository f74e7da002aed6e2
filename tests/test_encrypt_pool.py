"""Encrypting on several threads or processes gives what one thread gives: SEAL decrypts
it, the proofs verify at their indices, and the layout is the same."""

import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from clients.encrypt_pool import EncryptionPool
from he_agg import wellformed
from he_agg.envelope import Upload, decode_upload, encode_upload
from he_agg.noise import PROOF_GROUP
from he_agg.packing import weighted_vector
from he_agg.params import derive_parameters
from he_agg.rlwe import key_rows
from keys.committee import run_committee_setup
from tests.helpers import decrypt_with_summed_key

FAST = derive_parameters("pool-test", k_max=4, committee_max=3, value_bits=12, proofs=False)
PROVEN = derive_parameters("pool-test-proven", k_max=4, committee_max=3, value_bits=12)


@pytest.mark.parametrize("threads", [True, False], ids=["threads", "processes"])
@pytest.mark.parametrize("params", [FAST, PROVEN], ids=["no-proofs", "proofs"])
def test_a_pool_encrypts_what_one_process_would(params, threads, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import clients.encrypt_pool as pool_module

    monkeypatch.setattr(pool_module, "RUN", 3)  # several runs, uneven last one
    monkeypatch.setattr(pool_module, "THREAD_RUN", 3)
    setup = run_committee_setup(params, "f", members=3, threshold=2)
    rng = np.random.default_rng(3)
    values = rng.uniform(-1, 1, 7 * params.slots + 5)
    weighted = weighted_vector(values, 10, params)
    context = wellformed.ProofContext(params.fingerprint, "f", 0, 1, "c", b"\x02" * 32)
    seen: list[int] = []
    with EncryptionPool(setup.public, workers=2, threads=threads) as pool:
        words, proofs = pool.encrypt(weighted, context if params.proofs else None, seen.append)
    assert words.shape == (8, 2, len(params.data_primes), params.poly_degree)
    assert sum(seen) == 8
    blob = encode_upload(Upload("f", 1, "c", params.scale, words, 0, proofs), params)
    upload = decode_upload(blob, params, federation="f", round=1, client="c")
    if params.proofs:
        assert len(proofs) == 1
        wellformed.verify_upload(upload.words, proofs, key_rows(setup.public), params, context)
    decrypted = decrypt_with_summed_key(setup, words)[: weighted.size]
    assert np.abs(decrypted - weighted).max() < 1e-6 * np.abs(weighted).max()


@pytest.mark.parametrize("threads", [True, False], ids=["threads", "processes"])
def test_several_groups_are_proven_apart_at_their_indices(threads, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import clients.encrypt_pool as pool_module
    import he_agg.wellformed as wf

    monkeypatch.setattr(pool_module, "RUN", 2)
    monkeypatch.setattr(pool_module, "THREAD_RUN", 2)  # groups of runs 2+1, 2+1, 1
    monkeypatch.setattr(wf, "PROOF_GROUP", 3)  # 7 ciphertexts: groups of 3, 3, 1
    assert PROOF_GROUP >= 3
    params = PROVEN
    setup = run_committee_setup(params, "f", members=3, threshold=2)
    values = np.random.default_rng(4).uniform(-1, 1, 7 * params.slots - 1)
    context = wellformed.ProofContext(params.fingerprint, "f", 0, 1, "c", b"\x03" * 32)
    with EncryptionPool(setup.public, workers=2, threads=threads) as pool:
        words, proofs = pool.encrypt(weighted_vector(values, 1, params), context)
    assert len(proofs) == 3
    key = key_rows(setup.public)
    wf.verify_upload(words, proofs, key, params, context)
    swapped = (proofs[1], proofs[0], proofs[2])
    with pytest.raises(wf.ProofError):  # each proof is bound to its own first index
        wf.verify_upload(words, swapped, key, params, context)


def test_a_script_without_a_main_guard_can_use_the_pool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """multiprocessing's spawn would run the caller's script again in every worker (and
    refuse to start from one without ``if __name__ == "__main__"``); the pool's workers
    never import it."""
    marker = tmp_path / "ran"
    script = tmp_path / "client.py"
    script.write_text(
        "import numpy as np\n"
        "from clients.encrypt_pool import EncryptionPool\n"
        "from he_agg.packing import weighted_vector\n"
        "from keys.committee import run_committee_setup\n"
        "from tests.test_encrypt_pool import FAST\n"
        f"open({str(marker)!r}, 'a').write('x')\n"
        "setup = run_committee_setup(FAST, 'f', members=3, threshold=2)\n"
        "values = weighted_vector(np.ones(3 * FAST.slots), 1, FAST)\n"
        "with EncryptionPool(setup.public, workers=2, threads=False) as pool:\n"
        "    words, _ = pool.encrypt(values)\n"
        "print(words.shape[0])\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"
    assert marker.read_text() == "x"  # the script's top level ran once: not in the workers


def test_a_dead_worker_costs_speed_not_the_upload(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A worker killed (say, by the OOM killer) breaks the pool: the update is encrypted in
    this process instead, correctly, and the next one gets a fresh pool."""
    import signal

    import clients.encrypt_pool as pool_module

    monkeypatch.setattr(pool_module, "RUN", 2)
    setup = run_committee_setup(FAST, "f", members=3, threshold=2)
    values = weighted_vector(np.random.default_rng(9).uniform(-1, 1, 4 * FAST.slots), 3, FAST)
    with EncryptionPool(setup.public, workers=2, threads=False) as pool:
        pool.encrypt(values)  # the workers are up
        executor = pool._executor
        assert isinstance(executor, ProcessPoolExecutor)
        for process in list(executor._processes.values()):
            assert process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
        words, _ = pool.encrypt(values)
        assert pool._executor is None  # the broken pool was closed
        again, _ = pool.encrypt(values)  # and a new one started
    for encrypted in (words, again):
        decrypted = decrypt_with_summed_key(setup, encrypted)[: values.size]
        assert np.abs(decrypted - values).max() < 1e-6 * np.abs(values).max()


def test_the_pool_is_threads_for_the_native_backend_and_processes_for_seal(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The native kernels release the GIL; SEAL's Encryptor holds it. A set with proofs
    never uses SEAL's Encryptor (he_agg.rlwe's kernels make its words), so threads again."""
    setup = run_committee_setup(FAST, "f", members=3, threshold=2)
    proven = run_committee_setup(PROVEN, "f", members=3, threshold=2)
    monkeypatch.setenv("HE_AGG_BACKEND", "native")
    assert EncryptionPool(setup.public, workers=2).threads
    assert EncryptionPool(proven.public, workers=2).threads
    monkeypatch.setenv("HE_AGG_BACKEND", "seal")
    assert not EncryptionPool(setup.public, workers=2).threads
    assert EncryptionPool(proven.public, workers=2).threads


def test_the_work_in_flight_is_bounded() -> None:
    """Tasks are submitted as results are taken, never more than the window ahead: the
    values, words and randomness in flight stay bounded, whatever the update's size."""
    from concurrent.futures import ThreadPoolExecutor

    from clients.encrypt_pool import _ordered

    pulled = 0

    def calls():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for i in range(50):
            pulled += 1
            yield (i,)

    with ThreadPoolExecutor(2) as executor:
        for taken, result in enumerate(_ordered(executor, lambda i: i * i, calls(), 4), 1):
            assert result == (taken - 1) ** 2  # in order
            assert pulled <= taken + 3  # at most the window (4) submitted and untaken
    assert pulled == 50


def test_updates_take_turns_on_the_threads(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two clients sharing a pool (a simulation's) do not split the threads between them:
    one update is encrypted on every core, then the next, so the first is done (and can
    upload) in half the time rather than both at the end."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    setup = run_committee_setup(FAST, "f", members=3, threshold=2)
    values = weighted_vector(np.random.default_rng(5).uniform(-1, 1, 4 * FAST.slots), 1, FAST)
    inside, overlaps = [0], []
    guard = threading.Lock()
    pool = EncryptionPool(setup.public, workers=2, threads=True)
    real = pool._encrypt_on_threads

    def watched(*args):  # type: ignore[no-untyped-def]
        with guard:
            inside[0] += 1
            overlaps.append(inside[0])
        time.sleep(0.05)  # long enough for the other caller to arrive
        try:
            return real(*args)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(pool, "_encrypt_on_threads", watched)
    with pool, ThreadPoolExecutor(3) as callers:
        results = list(callers.map(lambda _: pool.encrypt(values)[0], range(3)))
    assert overlaps == [1, 1, 1]  # never two updates on the threads at once
    for words in results:
        decrypted = decrypt_with_summed_key(setup, words)[: values.size]
        assert np.abs(decrypted - values).max() < 1e-6 * np.abs(values).max()


def test_a_shared_pool_is_of_the_kind_the_backend_asks_for(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Switching HE_AGG_BACKEND between native and seal does not hand back the other kind."""
    from clients.encrypt_pool import (
        POOL_MIN_CIPHERTEXTS,
        THREAD_MIN_CIPHERTEXTS,
        _close_shared,
        pool_for,
    )

    setup = run_committee_setup(FAST, "f", members=3, threshold=2)
    size = max(THREAD_MIN_CIPHERTEXTS, POOL_MIN_CIPHERTEXTS)
    monkeypatch.setenv("HE_AGG_BACKEND", "native")
    on_threads = pool_for(setup.public, size, workers=2)
    monkeypatch.setenv("HE_AGG_BACKEND", "seal")
    on_processes = pool_for(setup.public, size, workers=2)
    assert on_threads is not None and on_threads.threads
    assert on_processes is not None and not on_processes.threads
    monkeypatch.setenv("HE_AGG_BACKEND", "native")
    try:
        assert pool_for(setup.public, size, workers=2) is on_threads  # still shared
    finally:
        _close_shared()  # no pool of this test's key left for the next ones
