"""Long polls wake on this process's commits (he_agg.server.changes), without lost wake-ups."""

from __future__ import annotations

import asyncio
import threading
import time

from he_agg.server.changes import Changes


async def _waited(commit_before_wait: bool, use_ticket: bool, timeout: float) -> float:
    changes = Changes()
    changes.attach(asyncio.get_running_loop())
    ticket = changes.ticket()  # taken before the waiter reads the state it waits on
    if commit_before_wait:  # a commit from a worker thread lands while the waiter reads
        worker = threading.Thread(target=changes.committed)
        worker.start()
        worker.join()
        await asyncio.sleep(0.05)  # the loop runs the wake-up the thread scheduled
    started = time.monotonic()
    await changes.wait(timeout, ticket if use_ticket else None)
    return time.monotonic() - started


def test_a_commit_while_the_waiter_reads_wakes_it_at_once() -> None:
    assert asyncio.run(_waited(True, True, timeout=5.0)) < 2.5
    # without the ticket, the same commit is missed and the wait runs to its timeout
    assert asyncio.run(_waited(True, False, timeout=0.3)) >= 0.25


async def _woken_by_a_later_commit() -> float:
    changes = Changes()
    changes.attach(asyncio.get_running_loop())
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, lambda: threading.Thread(target=changes.committed).start())
    started = time.monotonic()
    await changes.wait(5.0, changes.ticket())
    return time.monotonic() - started


def test_a_later_commit_wakes_a_waiter_and_no_commit_times_out() -> None:
    assert asyncio.run(_woken_by_a_later_commit()) < 2.5
    assert asyncio.run(_waited(False, True, timeout=0.2)) >= 0.15
