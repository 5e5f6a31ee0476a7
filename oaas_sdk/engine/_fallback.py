"""The pure-Python engine: batcher + background persister doing group commit over any
:class:`~oaas_sdk.stores.Store`, and its commit tickets.

A commit becomes a :class:`~oaas_sdk.stores.WriteRecord` on the caller's thread (encoding
done); :meth:`PythonEngine.submit` queues it and returns a :class:`CommitTicket`. One background
thread (the persister) takes records off the queue, closes a batch at ``batch_max_entries``
entries or ``batch_max_delay_ms`` after the batch's first record, and writes the batch in
one store transaction: one fsync for all its commits (group commit). Each ticket then
completes with ``None`` or the exception for that commit (:class:`ConflictError` for a
version mismatch, :class:`StorageError` when the whole transaction failed).

Until a record is written it stays in a pending overlay, so reads in this process see
every acknowledged commit (read-your-writes) even with ``durability="async"``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import deque
from typing import Any

from ..config import ENGINE_DEFAULTS as _D
from ..errors import StorageError
from ..stores import ObjectKey, Store, StoredObject, WriteRecord, apply_record
from . import protocol
from .protocol import CommitFuture, OnError, _dispatch, _settle, _settle_waiter, _Waiter

__all__ = ["PythonEngine", "CommitTicket"]

log = logging.getLogger("oaas_sdk")


class CommitTicket:
    """Completion of one submitted commit (or of a flush marker).

    ``error`` is ``None`` after success. Wait with :meth:`wait`; async callers use
    :meth:`PythonEngine.submit_future` instead, whose futures are resolved a batch at a time.
    """

    __slots__ = ("record", "error", "_done", "_event", "submitted_ns", "_future")

    def __init__(self, record: WriteRecord | None) -> None:
        self.record = record
        self.error: BaseException | None = None
        self._done = False
        self._event: threading.Event | None = None
        self.submitted_ns = time.perf_counter_ns()
        # (loop, future, on_error) to resolve when done; the persister resolves all
        # futures of a batch with one call_soon_threadsafe per event loop (PythonEngine._write).
        self._future: _Waiter | None = None

    def done(self) -> bool:
        return self._done

    def _complete(self, error: BaseException | None) -> None:
        self.error = error
        self._done = True
        if self._event is not None:
            self._event.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until done; raise the commit's error, if any."""
        if not self._done:
            if self._event is None:
                self._event = threading.Event()
                if self._done:
                    self._event.set()
            if not self._event.wait(timeout):
                raise TimeoutError("commit did not complete in time")
        if self.error is not None:
            raise self.error


_STOP = object()

# Forks this process has gone through (counted in the child): engines compare it per
# commit instead of calling os.getpid(), a system call (~0.3 µs).
class PythonEngine:
    """Batches commits from every object and persists them in the background.

    ``durability``: ``"sync"`` completes a ticket once its batch is durable;
    ``"async"`` once queued. ``batch_max_entries`` (count) and ``batch_max_delay_ms``
    (milliseconds) bound a batch. ``pending_max_bytes``: write throttling, a submission
    waits while more than this many bytes of entry values are queued and unwritten (0: no
    bound; the idea of the kernel's dirty-page throttling). ``inline=True`` writes in the
    caller's thread, one commit a batch (used for the memory store, where there is nothing
    to wait for).
    """

    def __init__(self, store: Store, *, durability: str = _D["durability"],
                 batch_max_entries: int = _D["batch_max_entries"],
                 batch_max_delay_ms: float = _D["batch_max_delay_ms"],
                 pending_max_bytes: int = _D["pending_max_bytes"],
                 inline: bool = False) -> None:
        self.store = store
        self.durability = durability
        self.batch_max_entries = batch_max_entries
        self.batch_max_delay_s = batch_max_delay_ms / 1000.0
        self.pending_max_bytes = pending_max_bytes
        self.inline = inline
        #: Whether a ticket completes before submit returns (no future needed).
        self.acks_at_submit = inline or durability == "async"
        #: The native engine's one-call commit (see NativeEngine); this engine has none.
        self.commit_object: Any = None
        self.commit_object_wait: Any = None
        #: The native engine object (see NativeEngine); none here.
        self._eng: Any = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: dict[ObjectKey, list[WriteRecord]] = {}
        self._lock = threading.Lock()
        #: Signalled (under ``_lock``) when a batch is written: throttled submitters wait.
        self._drained = threading.Condition(self._lock)
        self._pending_bytes = 0
        self.write_throttles = 0
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._forks = protocol._forks
        self._closed = False
        self._depth = 0
        self.commits = 0
        self.failed_commits = 0
        self.entries_written = 0
        self.bytes_written = 0
        self.batches = 0
        self.records_in_batches = 0
        self._latencies_us: deque[float] = deque(maxlen=8192)
        self.last_error: BaseException | None = None

    # -- submission ---------------------------------------------------------------------
    def submit(self, record: WriteRecord) -> CommitTicket:
        """Queue one commit; returns its ticket. Raises :class:`StorageError` when closed."""
        if self._closed:
            raise StorageError(f"{self.store.name}: the engine is closed")
        ticket = CommitTicket(record)
        if self.inline:
            self._write([ticket])
            return ticket
        self._ensure_thread()
        with self._lock:
            if self._pending_bytes > self.pending_max_bytes > 0:
                self._throttle()
            self._pending.setdefault(record.key, []).append(record)
            self._depth += 1
            self._pending_bytes += record.nbytes()
        if self.durability == "async":
            ticket._complete(None)  # write-back: acknowledged once queued
        self._queue.put(ticket)
        return ticket

    def submit_future(self, record: WriteRecord, loop: asyncio.AbstractEventLoop,
                      on_error: OnError | None = None) -> asyncio.Future[None]:
        """Queue one commit; returns a future of ``loop`` resolved (with the commit's error,
        if any) when the commit completes. The persister resolves the futures of a whole
        batch with one wake-up of each loop. ``on_error`` runs on ``loop`` before the
        future fails (never when it succeeds). Raises as :meth:`submit`."""
        ticket = self.submit(record)
        fut: asyncio.Future[None] = CommitFuture(loop=loop)
        if ticket._done:
            _settle(fut, ticket.error, on_error)
            return fut
        w = [loop, fut, on_error]
        ticket._future = w
        if ticket._done:  # completed while we attached: the persister may have missed it
            ticket._future = None
            _settle_waiter(w, ticket.error)
        return fut

    def _throttle(self) -> None:
        """Write throttling: wait (``_lock`` held, released while waiting) until the
        persister has brought the unwritten bytes to ``pending_max_bytes`` or below;
        returns early when the engine is closed or its persister is gone. The open batch is
        closed first (a flush marker) rather than waited out."""
        self.write_throttles += 1
        self._queue.put(CommitTicket(None))  # close the open batch: no waiting out its window
        t = self._thread
        while (self._pending_bytes > self.pending_max_bytes and not self._closed
               and t is not None and t.is_alive()):
            self._drained.wait(1.0)  # the timeout only re-checks the persister's liveness

    def _ensure_thread(self) -> None:
        if self._forks != protocol._forks:  # forked: the parent's thread is not ours
            self._forks = protocol._forks
            self._pid = os.getpid()
            self._thread = None
            self._queue = queue.SimpleQueue()
            with self._lock:
                self._pending.clear()
                self._depth = 0
                self._pending_bytes = 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="oaas-persister", daemon=True)
            self._thread.start()

    # -- reads ----------------------------------------------------------------------------
    def read(self, key: ObjectKey) -> StoredObject | None:
        """The object as committed through this engine: store state plus pending commits."""
        # Pending commits first: one the persister writes between the two reads is then
        # in `stored` and skipped below by its version. Read the other way round, a commit
        # written meanwhile would be in neither (seen with Redis, whose reads take a
        # round trip).
        with self._lock:
            pending = list(self._pending.get(key, ()))
        stored = self.store.read(key)
        for r in pending:
            found = stored.version if stored is not None else 0
            if found != r.expected_version:
                continue  # written meanwhile (already in `stored`) or bound to conflict
            stored = apply_record(stored, r)
        return stored

    # -- persister ----------------------------------------------------------------------
    def _run(self) -> None:
        q = self._queue
        # Wait batch_max_delay for more commits only when the last batch had company, and
        # only until as many commits as it had are in (its committers are back): a lone
        # committer, or a group that has all come back, would pay the delay on every
        # commit for nothing (the idea of PostgreSQL's commit_delay / commit_siblings).
        # With durability="async" nobody waits for the batch: it always collects for
        # batch_max_delay (or up to batch_max_entries). What is already queued always
        # joins the batch. The window runs from the first commit's submission, not from
        # when it is taken here: a commit queued during the last write has waited already.
        # (The native persister does the same: oprc-py batcher.rs.)
        collect = self.durability == "async"
        last_len = 0
        while True:
            first = q.get()
            if first is _STOP:
                return
            batch = [first]
            n = len(first.record.entries) if first.record is not None else 0
            delay = self.batch_max_delay_s if collect or last_len > 1 else 0.0
            deadline_ns = first.submitted_ns + int(delay * 1e9)
            target = self.batch_max_entries if collect else last_len
            stop = False
            while n < self.batch_max_entries and first.record is not None:
                remaining = ((deadline_ns - time.perf_counter_ns()) / 1e9
                             if len(batch) < target else 0.0)
                try:
                    item = q.get(timeout=remaining) if remaining > 0 else q.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                if item.record is None:  # a flush marker closes the batch
                    break
                n += len(item.record.entries)
            last_len = len(batch)
            self._write(batch)
            if stop:
                return

    def _write(self, tickets: list[CommitTicket]) -> None:
        records = [t.record for t in tickets if t.record is not None]
        results: list[Exception | None]
        error: BaseException | None = None
        try:
            results = self.store.write_batch(records) if records else []
        except BaseException as e:  # the whole transaction failed
            error = e if isinstance(e, StorageError) else StorageError(
                f"{self.store.name}: write failed: {e!r}")
            results = [error] * len(records)
            self.last_error = error
            log.error("batch of %d commits failed: %s", len(records), error)
        now = time.perf_counter_ns()
        if not self.inline:
            with self._lock:
                for r in records:
                    lst = self._pending.get(r.key)
                    if lst:
                        try:
                            lst.remove(r)
                        except ValueError:
                            pass
                        if not lst:
                            del self._pending[r.key]
                self._depth -= len(records)
                self._pending_bytes -= sum(r.nbytes() for r in records)
                self._drained.notify_all()
        if records:
            self.batches += 1
            self.records_in_batches += len(records)
        it = iter(results)
        wake: list[tuple[_Waiter, BaseException | None]] = []
        for t in tickets:
            if t.record is None:
                t._complete(None)
                continue
            res = next(it)
            if res is None:
                self.commits += 1
                self.entries_written += len(t.record.entries)
                self.bytes_written += t.record.nbytes()
                self._latencies_us.append((now - t.submitted_ns) / 1000.0)
            else:
                self.failed_commits += 1
                if t.done():  # durability="async": already acknowledged
                    log.error("write-back of %s/%s/%s failed after acknowledgement: %s",
                              *t.record.key, res)
                    self.last_error = res
            if not t.done():
                t._complete(res)
                w = t._future
                if w is not None:
                    t._future = None
                    wake.append((w, res))
        if wake:
            _dispatch(wake)

    # -- control --------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Block until every commit submitted so far is written (or failed)."""
        if self.inline or self._thread is None or self._pid != os.getpid():
            return
        marker = CommitTicket(None)
        self._queue.put(marker)
        marker.wait(timeout)

    def close(self) -> None:
        """Flush, stop the persister and close the store. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self._thread is not None and self._pid == os.getpid():
                self._queue.put(_STOP)
                self._thread.join()
            self._thread = None
            self.store.close()

    def stats(self) -> dict[str, Any]:
        """Counters of this engine (see ``oaas.stats()``)."""
        lat = sorted(self._latencies_us)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else 0.0

        return {
            "commits": self.commits,
            "failed_commits": self.failed_commits,
            "entries_written": self.entries_written,
            "bytes_written": self.bytes_written,
            "batches": self.batches,
            "mean_batch_size": (self.records_in_batches / self.batches) if self.batches else 0.0,
            "persist_latency_p50_us": pct(0.50),
            "persist_latency_p99_us": pct(0.99),
            "queue_depth": self._depth,
            "pending_bytes": self._pending_bytes,
            "write_throttles": self.write_throttles,
        }
