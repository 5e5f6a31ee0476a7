"""Process-wide state behind the ``oaas`` facade: configuration, engine, cache, identity map.

One :class:`Runtime` is active at a time; ``oaas.configure()`` replaces it after flushing
the old engine's pending writes. Objects find it through :func:`current`.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from . import _backend
from .config import OaasConfig
from .engine import Engine
from .errors import StorageError
from .stores import (
    ObjectKey,
    Store,
    display_url,
    lmdb_location,
    parse_storage_url,
)

if TYPE_CHECKING:
    from .model.object import OaasObject

__all__ = ["Runtime", "current", "configure", "shutdown"]

log = logging.getLogger("oaas_sdk")


class Runtime:
    """Everything one configuration owns.

    ``identity``: live objects by identity, weakly held (the identity map).
    ``dirty``: objects with uncommitted assignments or never committed, strongly held so
    no change is dropped before a commit. ``touched``: objects whose mutable fields were
    read since their last commit (candidates for in-place changes), weakly held.
    """

    def __init__(self, config: OaasConfig, store: Store | None = None) -> None:
        self.config = config
        self._given_store = store
        #: The implementations chosen for this configuration (oaas_sdk/_backend.py).
        self.backend = _backend.select(config, store)
        storage = "memory" if config.mock_mode else config.storage
        kind, _ = parse_storage_url(storage)
        self.store_url = storage
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        # Set when oaas.configure() replaced this runtime: it never opens its store again.
        self._replaced = False
        self._inline = kind == "memory"
        # A memory store is its own cache: caching its entries again would only cost. A
        # shared (Redis) store is written by other processes too: its entries are cached
        # only when cache_ttl_s bounds how long their commits can go unseen.
        shared = kind.startswith("redis")
        cache_bytes = (0 if kind == "memory" or (shared and config.cache_ttl_s is None)
                       else config.cache_max_bytes)
        self.cache: Any = self.backend.entry_cache(cache_bytes, config.cache_ttl_s)
        self.cache_enabled = cache_bytes > 0
        # Keys whose cached record lacks commits of an instance still alive or awaiting
        # its finalizer: [instances, newest committed version]. Loads of such keys read
        # through the engine (OaasObject._oaas_apply explains why commits skip the cache).
        self.cache_stale: dict[ObjectKey, list[int]] = {}
        self.identity: weakref.WeakValueDictionary[ObjectKey, OaasObject] = (
            weakref.WeakValueDictionary())
        self.dirty: dict[int, OaasObject] = {}
        self.touched: weakref.WeakValueDictionary[int, OaasObject] = (
            weakref.WeakValueDictionary())
        if config.durability == "async" and kind != "memory":
            _flush_on_sigterm()  # write-back must survive `kill` as it survives exit()

    @property
    def engine(self) -> Engine:
        """The engine, opening the store on first use (raises :class:`StorageError`).

        The native engine when the extension is active and the store is LMDB; otherwise
        the Python :class:`PythonEngine` over the store."""
        eng = self._engine
        if eng is None:
            with self._engine_lock:
                if self._engine is None:
                    if self._replaced:
                        return self._successor_engine()
                    self._engine = self._open_engine()
                eng = self._engine
        return eng

    def _successor_engine(self) -> Engine:
        """The engine for an object of a replaced runtime (one loaded before the last
        ``oaas.configure()``): the current runtime's when it has the same LMDB directory,
        so the process keeps one handle per environment (LMDB forbids two)."""
        kind, loc = parse_storage_url(self.store_url)
        if kind != "lmdb" or self._given_store is not None:
            return self._open_engine()  # nothing shared: a store of its own, as before
        cur = current()
        ckind, cloc = parse_storage_url(cur.store_url)
        if (cur is not self and ckind == "lmdb" and cur._given_store is None
                and _same_directory(lmdb_location(cloc)[0], lmdb_location(loc)[0])):
            return cur.engine
        raise StorageError(
            f"lmdb store at {lmdb_location(loc)[0]}: closed, because oaas.configure() "
            f"replaced the configuration this object was loaded under; load it again")

    def _open_engine(self) -> Engine:
        return self.backend.open_engine(self.config, self.store_url, self._given_store,
                                        self._inline)

    @property
    def native(self) -> ModuleType | None:
        """The native extension module when this runtime uses it, else ``None``."""
        return self.backend.native

    @property
    def implementation(self) -> str:
        """``"native"`` or ``"python"``."""
        return self.backend.implementation

    def flush(self) -> None:
        if self._engine is not None:
            self._engine.flush()

    def close(self) -> None:
        """Flush pending writes and close the store."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def stats(self) -> dict[str, Any]:
        eng = self._engine
        out: dict[str, Any] = {
            "implementation": self.implementation,
            "store": display_url(self.store_url),
            "durability": self.config.durability,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "cache_evictions": self.cache.evictions,
            "cache_bytes": self.cache.nbytes,
            "cache_entries": len(self.cache),
            "live_objects": len(self.identity),
            "dirty_objects": len(self.dirty),
        }
        if eng is not None:
            out.update(eng.stats())
        else:
            out.update({"commits": 0, "failed_commits": 0, "entries_written": 0,
                        "bytes_written": 0, "batches": 0, "mean_batch_size": 0.0,
                        "persist_latency_p50_us": 0.0, "persist_latency_p99_us": 0.0,
                        "queue_depth": 0, "pending_bytes": 0, "write_throttles": 0})
        return out


def _same_directory(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


_current: Runtime | None = None
_lock = threading.Lock()


def current() -> Runtime:
    """The active runtime; created from ``OaasConfig()`` (environment) on first use."""
    rt = _current
    if rt is None:
        with _lock:
            if _current is None:
                _set(Runtime(OaasConfig()))
            rt = _current
    assert rt is not None
    return rt


def _set(rt: Runtime) -> None:
    global _current
    _current = rt


def configure(config: OaasConfig | None, store: Store | None = None) -> Runtime:
    """Flush and close the active runtime, then activate one for ``config``.

    ``store``: use this already open store instead of opening ``config.storage`` (tests use
    it to keep a memory store across configurations).
    """
    new = Runtime(config if config is not None else OaasConfig(), store)
    with _lock:
        old = _current
        if old is not None:
            old._replaced = True
            old.close()
        _set(new)
    return new


def shutdown() -> None:
    """Flush pending writes and close the store (also run at interpreter exit)."""
    rt = _current
    if rt is not None:
        try:
            rt.close()
        except Exception:
            log.exception("flush at shutdown failed")


atexit.register(shutdown)

#: Longest a SIGTERM waits for the write-back to be flushed before the process exits.
SIGTERM_FLUSH_TIMEOUT_S = 20.0
_sigterm_installed = False


def _flush_on_sigterm() -> None:
    """Install a SIGTERM handler that flushes and closes the active runtime, then lets
    the signal's previous disposition (the default: terminate) end the process, so it
    still exits with the SIGTERM status. Only from the main thread, once, and only when
    nobody installed a handler (SIGTERM at its default: a handler of the application, an
    ignored SIGTERM or one set outside Python is left alone)."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # no SIGTERM here, or not allowed
        return
    _sigterm_installed = True


#: While the main thread is inside the engine's code (which may hold a lock the flush
#: needs), the handler is run again this much later, for at most SIGTERM_DEFER_S.
_SIGTERM_RETRY_S = 0.002
SIGTERM_DEFER_S = 2.0
_sigterm_since: float | None = None


def _in_engine(frame: FrameType | None) -> bool:
    """Whether the interrupted main thread is inside ``oaas_sdk.engine`` (between
    bytecodes of code that may hold the engine's locks)."""
    while frame is not None:
        if frame.f_globals.get("__name__") == "oaas_sdk.engine":
            return True
        frame = frame.f_back
    return False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _sigterm_installed, _sigterm_since
    now = time.monotonic()
    if _sigterm_since is None:
        _sigterm_since = now
    if _in_engine(frame) and now - _sigterm_since < SIGTERM_DEFER_S:
        # Blocking here could deadlock the flush on a lock this thread holds: let it
        # leave the engine, and take the signal again shortly.
        pid = os.getpid()
        threading.Timer(_SIGTERM_RETRY_S, os.kill, (pid, signal.SIGTERM)).start()
        return
    # The flush runs on another thread and this one waits, so nothing more is committed
    # (and acknowledged) meanwhile; the timeout bounds a flush that cannot finish.
    t = threading.Thread(target=shutdown, name="oaas-sigterm-flush", daemon=True)
    t.start()
    t.join(SIGTERM_FLUSH_TIMEOUT_S)
    if t.is_alive():
        log.error("SIGTERM: write-back not flushed within %.0f s; exiting anyway",
                  SIGTERM_FLUSH_TIMEOUT_S)
    # Chain to the default disposition: the process ends as killed by SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _sigterm_installed = False
    signal.raise_signal(signal.SIGTERM)


if hasattr(os, "register_at_fork"):
    # A child must not share the parent's LMDB handles or persister thread.
    def _after_fork_in_child() -> None:
        rt = _current
        if rt is not None and rt._engine is not None:
            rt._engine = None

    os.register_at_fork(after_in_child=_after_fork_in_child)
