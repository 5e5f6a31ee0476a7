"""The write path: batcher + background persister doing group commit, and commit tickets.

A commit becomes a :class:`~oaas_sdk.stores.WriteRecord` on the caller's thread (encoding
done); :meth:`Engine.submit` queues it and returns a :class:`CommitTicket`. One background
thread (the persister) takes records off the queue, closes a batch at ``batch_max_entries``
entries or ``batch_max_delay_ms`` after the batch's first record, and writes the batch in
one store transaction: one fsync for all its commits (group commit). Each ticket then
completes with ``None`` or the exception for that commit (:class:`ConflictError` for a
version mismatch, :class:`StorageError` when the whole transaction failed).

Until a record is written it stays in a pending overlay, so reads in this process see
every acknowledged commit (read-your-writes) even with ``durability="async"``.

:class:`NativeEngine` offers the same interface over the native engine
(``oaas_sdk._native.Engine``, ``oprc-py/src/engine/``): batching, persistence and waiting
happen in Rust with the GIL released; only the LMDB store is native.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Protocol

from .config import ENGINE_DEFAULTS as _D
from .errors import StorageError
from .stores import ObjectKey, Store, StoredObject, WriteRecord, apply_record

__all__ = ["Engine", "CommitFuture", "CommitTicket", "NativeEngine", "Ticket", "AnyEngine"]

log = logging.getLogger("oaas_sdk")


def thrown(typ: Any, val: Any = None) -> BaseException:
    """The exception ``coroutine.throw(typ, val)`` raises: ``typ`` itself when it is an
    exception instance, else ``typ(val)`` (``typ()`` without ``val``)."""
    if isinstance(typ, BaseException):
        return typ
    exc: BaseException = typ() if val is None else typ(val)
    return exc


class CommitFuture(asyncio.Future[None]):
    """The future of a durable commit made in Python (``submit_future``): an
    ``asyncio.Future`` that is also a coroutine (``send`` / ``throw`` / ``close``, driving
    its own ``__await__``), so ``asyncio.run(obj.commit_async())`` and
    ``asyncio.create_task(obj.commit_async())`` take it, as they take oaas-sdk2-py's
    ``async def commit_async``. (The native engine's one-call commits have their own,
    ``_native.CommitFuture``, with the same protocols.)"""

    __slots__ = ()

    def send(self, value: Any) -> Any:
        if not self.done():
            self._asyncio_future_blocking = True
            return self  # the task waits on this future
        raise StopIteration(self.result())

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise thrown(typ, val)

    def close(self) -> None:
        pass


class CommitTicket:
    """Completion of one submitted commit (or of a flush marker).

    ``error`` is ``None`` after success. Wait with :meth:`wait`; async callers use
    :meth:`Engine.submit_future` instead, whose futures are resolved a batch at a time.
    """

    __slots__ = ("record", "error", "_done", "_event", "submitted_ns", "_future")

    def __init__(self, record: WriteRecord | None) -> None:
        self.record = record
        self.error: BaseException | None = None
        self._done = False
        self._event: threading.Event | None = None
        self.submitted_ns = time.perf_counter_ns()
        # (loop, future, on_error) to resolve when done; the persister resolves all
        # futures of a batch with one call_soon_threadsafe per event loop (Engine._write).
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


OnError = Callable[[], Any]
#: What a future-based submission leaves for the persister: ``[loop, future, on_error]``,
#: ``on_error`` being what to run on that loop before the future fails (it usually holds
#: the committing object). A list, so that settling can drop ``on_error`` while the
#: persister's thread may still hold the waiter: the object must be collectable (its
#: finalizer fills the entry cache) as soon as its commit settled.
_Waiter = list[Any]


def _settle(fut: asyncio.Future[None], error: BaseException | None,
            on_error: OnError | None = None) -> None:
    if fut.done():  # settled by the other side of a race, or cancelled
        if error is not None and on_error is not None and fut.cancelled():
            _run(on_error)  # nobody awaits the failure, but the object must still know
        return
    if error is None:
        fut.set_result(None)
    else:
        if on_error is not None:
            _run(on_error)
        fut.set_exception(error)


def _run(on_error: OnError) -> None:
    try:
        on_error()
    except Exception:
        log.exception("commit error handler failed")


def _settle_waiter(w: _Waiter, error: BaseException | None) -> None:
    on_error = w[2]
    w[2] = None
    _settle(w[1], error, on_error)


def _settle_many(items: list[tuple[_Waiter, BaseException | None]]) -> None:
    for w, error in items:
        fut = w[1]
        if error is None and not fut.done():  # the common case, inlined
            w[2] = None
            fut.set_result(None)
        else:
            _settle_waiter(w, error)


def _dispatch(items: list[tuple[_Waiter, BaseException | None]]) -> None:
    """Resolve futures from a non-loop thread: one ``call_soon_threadsafe`` per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiter, BaseException | None]]] = {}
    for item in items:
        loop = item[0][0]
        lst = by_loop.get(loop)
        if lst is None:
            lst = by_loop[loop] = []
        lst.append(item)
    for loop, lst in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_many, lst)
        except RuntimeError:  # the loop was closed: nobody is waiting any more
            pass


class Ticket(Protocol):
    """What :meth:`Engine.submit` and :meth:`NativeEngine.submit` return."""

    @property
    def error(self) -> BaseException | None: ...

    def done(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> None: ...


_STOP = object()

# Forks this process has gone through (counted in the child): engines compare it per
# commit instead of calling os.getpid(), a system call (~0.3 µs).
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)


class Engine:
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
        self._forks = _forks
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
        if self._forks != _forks:  # forked: the parent's thread is not ours
            self._forks = _forks
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


class _NativeStoreView:
    """The ``store`` attribute of a :class:`NativeEngine`: name, reads and scans."""

    def __init__(self, native: Any, path: str) -> None:
        self._native = native
        self.path = path
        self.name: str = native.name

    def read(self, key: ObjectKey) -> StoredObject | None:
        found = self._native.read(*key)
        return None if found is None else StoredObject(*found)

    def map_size(self) -> int:
        """Current LMDB map size in bytes."""
        return int(self._native.map_size())

    def close(self) -> None:
        self._native.close()


class NativeEngine:
    """The native engine (``oaas_sdk._native.Engine``) with :class:`Engine`'s interface.

    ``path``: directory of the LMDB environment (same layout and files as
    :class:`~oaas_sdk.stores.lmdb.LmdbStore`). Other arguments as :class:`Engine`, plus
    ``map_size``/``max_map_size`` (bytes). ``submit`` returns a native ticket whose
    ``wait()`` releases the GIL. ``submit_future`` gives a future of the caller's loop:
    the native persister reports each batch's outcomes at once, and the loop, watching
    the engine's completion socket, resolves them on its own thread (:meth:`_watch`;
    docs/engine.md). ``commit_object`` is the one-call commit of ``commit_async``.
    (A Rust future per commit through pyo3-async-runtimes was measured first: one GIL
    acquisition and one loop wake-up per commit made it 0.6x the Python engine.)
    Raises :class:`StorageError` when the store cannot be opened.
    """

    def __init__(self, native: ModuleType, path: str, *, durability: str = _D["durability"],
                 batch_max_entries: int = _D["batch_max_entries"],
                 batch_max_delay_ms: float = _D["batch_max_delay_ms"],
                 pending_max_bytes: int = _D["pending_max_bytes"],
                 **store_options: int) -> None:
        from .stores.lmdb import claim_environment, release_environment

        self._claim: object | None = claim_environment(path, "the native engine")
        try:
            self._eng = native.Engine(path, durability=durability,
                                      batch_max_entries=batch_max_entries,
                                      batch_max_delay_ms=batch_max_delay_ms,
                                      pending_max_bytes=pending_max_bytes, **store_options)
        except BaseException:
            release_environment(self._claim)
            raise
        self._submit = self._eng.submit
        #: One call that encodes an object's assigned fields, queues the commit and
        #: applies it to the object (``_native.Engine.commit_object``); ``None`` on
        #: :class:`Engine`.
        self.commit_object = self._eng.commit_object
        self._commit_object_future = self._eng.commit_object_future
        self.durability = durability
        self.inline = False
        #: Whether a ticket completes before submit returns (no future needed).
        self.acks_at_submit = durability == "async"
        self.store = _NativeStoreView(self._eng, path)
        self._waiters: dict[int, _Waiter] = {}
        self._tokens = itertools.count(1)
        self._dispatcher: threading.Thread | None = None
        self._pid = os.getpid()
        self._forks = _forks
        # Loops that watch the completion pipe (id -> weak ref), and the loop last seen.
        self._watching: dict[int, weakref.ref[asyncio.AbstractEventLoop]] = {}
        self._watched: asyncio.AbstractEventLoop | None = None
        self._notify_fd = -1
        # Failures no caller hears of (a failed batch, a failed write-back) reach the
        # "oaas_sdk" logger as the Python engine's do: a thread blocked in the native
        # failure log (which holds the log only, not the engine) logs them as they come.
        self._failures = _FailureLogger(self._eng.failure_log())
        self._logger = threading.Thread(target=self._failures.run, daemon=True,
                                        name="oaas-failure-log")
        self._logger.start()

    def submit_future(self, record: WriteRecord, loop: asyncio.AbstractEventLoop,
                      on_error: OnError | None = None) -> asyncio.Future[None]:
        """Queue one commit; returns a future of ``loop`` resolved (with the commit's error,
        if any) when the commit completes. ``on_error`` runs on ``loop`` before the future
        fails. Raises :class:`StorageError` when closed."""
        fut: asyncio.Future[None] = CommitFuture(loop=loop)
        cls_id, pid, oid = record.key
        if self.acks_at_submit:  # acknowledged once queued
            t = self._submit(cls_id, pid, oid, record.expected_version, record.entries,
                             record.deletes, record.delete_object, record.time_ms)
            _settle(fut, t.error, on_error)
            return fut
        if loop is not self._watched:
            self._watch(loop)
        token = next(self._tokens)
        self._waiters[token] = [loop, fut, on_error]
        try:
            self._submit(cls_id, pid, oid, record.expected_version, record.entries,
                         record.deletes, record.delete_object, record.time_ms, token)
        except BaseException:
            del self._waiters[token]
            raise
        return fut

    def commit_object_future(self, obj: Any, encoders: dict[str, Any],
                             loop: asyncio.AbstractEventLoop) -> Awaitable[None]:
        """``commit_object`` of a durable commit: returns a future of ``loop`` (the
        running loop), resolved by the engine on that loop when the commit's batch is
        fsynced, or failed with its ``ConflictError`` / ``StorageError`` after the
        object's changes are restored (``_native.Engine.commit_object_future``). Raises
        as ``commit_object``; nothing is queued then."""
        if loop is not self._watched:
            self._watch(loop)
        return self._commit_object_future(obj, encoders, loop)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have ``loop`` resolve this engine's futures itself: it watches the engine's
        completion pipe (``notify_fd``), written by the persister once per batch, and
        takes the completions on its own thread (:meth:`_on_ready`): no thread and no GIL
        hand-off in between. A loop without ``add_reader`` (Windows' proactor loop), or a
        platform without the socket, gets them from the dispatcher thread instead."""
        self._watched = loop
        ref = self._watching.get(id(loop))
        if ref is not None and ref() is loop:
            return
        try:
            if self._notify_fd < 0:
                self._notify_fd = self._eng.notify_fd()
            loop.add_reader(self._notify_fd, self._on_ready, loop)
        except NotImplementedError:
            if self._dispatcher is None or self._forks != _forks:
                self._start_dispatcher()
            return
        self._watching[id(loop)] = weakref.ref(loop)

    def _on_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reader callback on ``loop``: resolve the completed commits."""
        items = self._eng.take_ready(loop)  # resolves commit_object_future's futures itself
        if items:
            self._wake(items, loop)

    def _start_dispatcher(self) -> None:
        self._pid = os.getpid()
        self._forks = _forks
        self._dispatcher = threading.Thread(target=self._dispatch_loop, daemon=True,
                                            name="oaas-completions")
        self._dispatcher.start()

    def _dispatch_loop(self) -> None:
        take = self._eng.take_completions
        while True:
            items = take(None)  # blocks with the GIL released; None once closed
            if items is None:
                return
            self._wake(items)
            # Drop this batch before blocking again: its waiters hold the objects.
            del items

    def _wake(self, items: list[tuple[int, BaseException | None]],
              here: asyncio.AbstractEventLoop | None = None) -> None:
        """Resolve the futures of completed commits: those of ``here`` (the loop running
        this call) at once, the others through their loop's ``call_soon_threadsafe``."""
        waiters = self._waiters
        local: list[tuple[_Waiter, BaseException | None]] = []
        other: list[tuple[_Waiter, BaseException | None]] = []
        for token, err in items:
            w = waiters.pop(token, None)
            if w is not None:
                (local if w[0] is here else other).append((w, err))
        if local:
            _settle_many(local)
        if other:
            _dispatch(other)

    def submit(self, record: WriteRecord) -> Any:
        """Queue one commit; returns its native ``Ticket``. Raises :class:`StorageError`
        when the engine is closed."""
        cls_id, pid, oid = record.key
        return self._submit(cls_id, pid, oid, record.expected_version, record.entries,
                            record.deletes, record.delete_object, record.time_ms)

    def read(self, key: ObjectKey) -> StoredObject | None:
        """The object as committed through this engine (store plus pending commits)."""
        return self.store.read(key)

    def flush(self, timeout: float | None = None) -> None:
        """Block (GIL released) until every commit submitted so far is written or failed;
        the failures among them are logged when this returns."""
        self._eng.flush(timeout)
        self._failures.log_now()

    def close(self) -> None:
        """Flush, stop the persister and close the store. Idempotent."""
        from .stores.lmdb import release_environment

        rest = self._eng.close()
        if self._claim is not None:
            release_environment(self._claim)
            self._claim = None
        if self._pid == os.getpid() and self._logger.is_alive():
            # The log ends with the engine: its last lines are logged before this returns.
            self._logger.join(timeout=5.0)
        if rest:
            self._wake(rest)
        fd = self._notify_fd
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for ref in self._watching.values():
            loop = ref()
            if loop is None or loop.is_closed():
                continue
            try:
                if loop is running:
                    loop.remove_reader(fd)
                else:
                    loop.call_soon_threadsafe(loop.remove_reader, fd)
            except RuntimeError:  # closed meanwhile
                pass
        self._watching.clear()
        self._watched = None

    def stats(self) -> dict[str, Any]:
        """Counters, with the keys of :meth:`Engine.stats`."""
        return dict(self._eng.stats())


class _FailureLogger:
    """Logs the lines of a native engine's failure log (``_native.FailureLog``) on the
    ``oaas_sdk`` logger: :meth:`run` (a thread) as they come, until the engine closes;
    :meth:`log_now` those there now. Lines are taken and logged under one lock, so once
    ``log_now`` returns every line pushed before it was called has been logged."""

    def __init__(self, failures: Any) -> None:
        self._failures = failures
        self._lock = threading.Lock()

    def run(self) -> None:
        while self._failures.wait(None):  # None once closed and empty
            self.log_now()

    def log_now(self) -> None:
        with self._lock:
            for line in self._failures.take(0.0) or ():
                log.error("%s", line)


#: Either engine: what ``Runtime.engine`` holds.
AnyEngine = Engine | NativeEngine
