"""The adapter of the native engine (``oaas_sdk._native.Engine``, ``oprc-py/src/engine/``):
:class:`NativeEngine` offers the Python :class:`~oaas_sdk.engine.PythonEngine`'s interface;
batching, persistence and waiting happen in Rust with the GIL released; the native
stores are LMDB, Redis and Redis Cluster, and memory (``oprc-py/core/src/store/``), where
each commit is written in the committing thread. It is given the extension module by the
seam (``oaas_sdk._backend``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import weakref
from collections.abc import Awaitable
from types import ModuleType
from typing import Any

from ..config import ENGINE_DEFAULTS as _D
from ..stores import ObjectKey, StoredObject, WriteRecord
from ..stores.memory import NativeMemoryStore
from . import protocol
from .protocol import CommitFuture, OnError, _dispatch, _settle, _settle_many, _Waiter

__all__ = ["NativeEngine"]

log = logging.getLogger("oaas_sdk")


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
    """The native engine (``oaas_sdk._native.Engine``) with :class:`PythonEngine`'s interface.

    ``path``: directory of the LMDB environment (same layout and files as
    :class:`~oaas_sdk.stores.lmdb.LmdbStore`), or, with ``redis=(prefix, name,
    retry_deadline_s, cluster, ca_file, wait_replicas, wait_timeout_s)``, the URL of one
    Redis server (``redis[s]://...``, no query) or the startup nodes of a cluster (one URL
    per line; TLS verified against the PEM file ``ca_file``, ``None``: the system's CAs; same keys
    and bytes as :class:`~oaas_sdk.stores.redis.RedisStore`, keys under ``prefix``, ``name``
    in messages, retried for ``retry_deadline_s`` seconds while unreachable, ``WAIT`` for
    ``wait_replicas`` replicas after each batch when > 0), or, with
    ``memory=store`` (a :class:`~oaas_sdk.stores.memory.NativeMemoryStore`; ``path`` is
    then unused), that memory store: each commit is written in the committing thread, so
    it is done (written or refused) when submitted, whatever ``durability`` says, as
    :class:`PythonEngine` with ``inline=True``. Other arguments as :class:`PythonEngine`,
    plus ``map_size``/``max_map_size`` (bytes, LMDB).
    ``submit`` returns a native ticket whose ``wait()`` releases the GIL. ``submit_future``
    gives a future of the caller's loop: the native persister reports each batch's
    outcomes at once, and the loop, watching the engine's completion socket, resolves them
    on its own thread (:meth:`_watch`; docs/engine.md). ``commit_object`` is the one-call
    commit of ``commit_async``.
    (A Rust future per commit through pyo3-async-runtimes was measured first: one GIL
    acquisition and one loop wake-up per commit made it 0.6x the Python engine.)
    Raises :class:`StorageError` when the store cannot be opened.
    """

    def __init__(self, native: ModuleType, path: str, *, durability: str = _D["durability"],
                 batch_max_entries: int = _D["batch_max_entries"],
                 batch_max_delay_ms: float = _D["batch_max_delay_ms"],
                 pending_max_bytes: int = _D["pending_max_bytes"],
                 redis: tuple[str, str, float, bool, str | None, int, float] | None = None,
                 memory: NativeMemoryStore | None = None,
                 **store_options: int) -> None:
        from ..stores.lmdb import claim_environment, release_environment

        self._claim: object | None = None
        if redis is None and memory is None:
            self._claim = claim_environment(path, "the native engine")
        try:
            self._eng = native.Engine(path, durability=durability,
                                      batch_max_entries=batch_max_entries,
                                      batch_max_delay_ms=batch_max_delay_ms,
                                      pending_max_bytes=pending_max_bytes, redis=redis,
                                      memory=None if memory is None else memory.native,
                                      **store_options)
        except BaseException:
            if self._claim is not None:
                release_environment(self._claim)
            raise
        self._submit = self._eng.submit
        #: One call that encodes an object's assigned fields, queues the commit and
        #: applies it to the object (``_native.Engine.commit_object``); ``None`` on
        #: :class:`PythonEngine`.
        self.commit_object = self._eng.commit_object
        self._commit_object_future = self._eng.commit_object_future
        #: ``commit_object`` of the blocking ``commit()``: returns once the commit is
        #: written with ``durability="sync"`` (``_native.Engine.commit_object_wait``).
        self.commit_object_wait = self._eng.commit_object_wait
        self.durability = durability
        #: Whether commits are written in the committing thread (the memory store).
        self.inline = memory is not None
        #: Whether a ticket completes before submit returns (no future needed).
        self.acks_at_submit = durability == "async" or self.inline
        self.store: _NativeStoreView | NativeMemoryStore
        if memory is not None:
            self.store = memory
            self.read = memory.read  # type: ignore[method-assign]  # nothing is pending
        else:
            # The view's path: the LMDB directory, or the store's name (a Redis URL may
            # hold a password).
            self.store = _NativeStoreView(self._eng,
                                          path if redis is None else self._eng.name)
        self._waiters: dict[int, _Waiter] = {}
        self._tokens = itertools.count(1)
        self._dispatcher: threading.Thread | None = None
        self._pid = os.getpid()
        self._forks = protocol._forks
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
                             loop: asyncio.AbstractEventLoop) -> Awaitable[None] | None:
        """``commit_object`` of a durable commit: returns a future of ``loop`` (the
        running loop), resolved by the engine on that loop when the commit's batch is
        fsynced, or failed with its ``ConflictError`` / ``StorageError`` after the
        object's changes are restored (``_native.Engine.commit_object_future``); ``None``
        when nothing changed (the object is settled, nothing queued). Raises as
        ``commit_object``; nothing is queued then."""
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
            if self._dispatcher is None or self._forks != protocol._forks:
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
        self._forks = protocol._forks
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
        from ..stores.lmdb import release_environment

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
        """Counters, with the keys of :meth:`PythonEngine.stats`."""
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
