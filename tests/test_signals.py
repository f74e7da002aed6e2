"""SIGTERM unwinds a command that starts children (clients.harness.signals): its finally
blocks stop them, where SIGTERM's default action left them running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from clients.harness.signals import exit_on_sigterm
    if sys.argv[1] == "unwind":
        exit_on_sigterm()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # the pid is printed inside: SIGTERM may arrive the moment it is read
        print(child.pid, flush=True)
        time.sleep(120)
    finally:
        child.terminate()
        child.wait()
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_and_terminate(mode: str) -> tuple[int, int]:
    """Start the parent, SIGTERM it once its child runs; (its exit status, the child's pid)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, env=env, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGTERM)
    return parent.wait(timeout=30), child


def test_sigterm_stops_the_children_through_finally() -> None:
    status, child = _run_and_terminate("unwind")
    assert status == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_without_it_the_child_outlives_its_parent() -> None:
    """The behaviour the module fixes, shown (the orphan is killed here afterwards)."""
    status, child = _run_and_terminate("default")
    try:
        assert status == -signal.SIGTERM
        time.sleep(0.2)
        assert _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
