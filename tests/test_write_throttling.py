"""Write throttling (``pending_max_bytes``): with write-back (``durability="async"``) a
commit waits while more than ``pending_max_bytes`` of entry values are queued and not yet
written, so the queue stays bounded when the store is slower than the writers; nothing
acknowledged is lost. Both engines (``lmdb_sdk``)."""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from oaas_sdk import oaas, runtime

from .models import Counter

LIMIT = 600


def test_pending_bytes_stay_bounded(lmdb_sdk) -> None:
    # A window far longer than this test: without throttling every commit of this loop
    # would sit in the queue; a throttled commit closes the batch instead of waiting it out.
    lmdb_sdk.reconfigure(durability="async", batch_max_delay_ms=60_000,
                         pending_max_bytes=LIMIT)
    rt = runtime.current()
    largest = 0
    peak = 0
    for i in range(40):
        c = Counter.create(obj_id=i)
        c.label = "x" * 100
        c.count = i
        c.commit()
        largest = max(largest, sum(map(len, c._oaas_state.committed.values())))
        peak = max(peak, rt.engine.stats()["pending_bytes"])
    stats = oaas.stats()
    assert stats["write_throttles"] > 0
    assert peak <= LIMIT + largest
    rt.flush()
    assert oaas.stats()["pending_bytes"] == 0
    lmdb_sdk.reconfigure()
    assert [Counter.load(i).count for i in range(40)] == list(range(40))


def test_no_bound_with_zero(lmdb_sdk) -> None:
    # A window far longer than this test: the commits stay queued until the flush.
    lmdb_sdk.reconfigure(durability="async", batch_max_delay_ms=60_000, pending_max_bytes=0)
    for i in range(10):
        c = Counter.create(obj_id=i)
        c.label = "y" * 100
        c.commit()
    stats = oaas.stats()
    assert stats["write_throttles"] == 0
    assert stats["pending_bytes"] > LIMIT
    runtime.current().flush()
    assert oaas.stats()["pending_bytes"] == 0


# Holds the store's write lock from another process until its standard input closes.
_HOLD_WRITE_LOCK = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=8, subdir=True)
txn = env.begin(write=True)
print("locked", flush=True)
sys.stdin.read()
txn.abort()
env.close()
"""


def test_ctrl_c_interrupts_a_throttled_commit(lmdb_sdk) -> None:
    """A writer waiting for a stalled store (another process holds LMDB's write lock)
    can be interrupted: KeyboardInterrupt, and the commit is not queued."""
    lmdb_sdk.reconfigure(durability="async", batch_max_delay_ms=0, pending_max_bytes=LIMIT)
    c = Counter.create(obj_id=1)
    c.commit()
    runtime.current().flush()
    blocker = subprocess.Popen([sys.executable, "-c", _HOLD_WRITE_LOCK, str(lmdb_sdk.path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    interrupted = threading.Event()

    def interrupt_when_throttled() -> None:
        while oaas.stats()["write_throttles"] == 0:
            time.sleep(0.005)
        interrupted.set()
        os.kill(os.getpid(), signal.SIGINT)

    # Were the wait not interruptible, this test would hang: fail it instead.
    faulthandler.dump_traceback_later(60, exit=True)
    t = threading.Thread(target=interrupt_when_throttled, daemon=True)
    try:
        assert blocker.stdout is not None and blocker.stdout.readline() == "locked\n"
        t.start()  # the persister now waits for the other process's lock
        with pytest.raises(KeyboardInterrupt):
            for i in range(2, 200):  # queued behind the lock until throttled
                o = Counter.create(obj_id=i)
                o.label = "z" * 100
                o.commit()
        assert interrupted.is_set()
    finally:
        faulthandler.cancel_dump_traceback_later()
        assert blocker.stdin is not None
        blocker.stdin.close()
        assert blocker.wait(30) == 0
        if t.is_alive():
            t.join(10)
    runtime.current().flush()
    assert oaas.stats()["pending_bytes"] == 0
