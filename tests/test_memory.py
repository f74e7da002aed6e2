"""The allocator tuning (he_agg.memory, in the server and the committee members): after a
load of MiB-sized buffers, memory goes back to the system. Run in fresh interpreters, since
the tuning is global."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the tuning is glibc's; elsewhere it is a documented no-op",
)

_SCENARIO = """
import sys
from he_agg.memory import release_free_memory, tune_allocator

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

mode = sys.argv[1]
if mode == "tuned":
    assert tune_allocator()
big = b"z" * (16 << 20)  # a 16 MiB upload window, freed: glibc raises its mmap threshold
del big
base = rss_mb()
buffers, kept = [], []
for _ in range(64):
    buffers.append(b"x" * (2 << 20))  # request buffers of 2 MiB ...
    kept.append(b"y" * 100_000)  # ... between longer-lived allocations
del buffers
if mode == "trimmed":
    release_free_memory()
print(rss_mb() - base)
"""


def _retained_mb(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _SCENARIO, mode], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def test_freed_request_buffers_go_back_to_the_system() -> None:
    # the failure it mends: 128 MiB of freed buffers stay in the heap behind small ones
    assert _retained_mb("untuned") > 64
    assert _retained_mb("tuned") < 32  # a fixed mmap threshold: returned on free
    assert _retained_mb("trimmed") < 32  # malloc_trim: returned once the load is over
