"""The one seam between the SDK and its two implementations: native (``oaas_sdk._native``,
Rust) or pure Python. :func:`select` chooses once, from the configuration, and hands the
runtime a :class:`Backend` whose factories make the cache, the engine and mapped files;
choosing also points the codec (``codec.set_backend``) and ``OaasObject``'s hot methods
(``__setattr__``, ``commit_async``) at the chosen implementation.

Nothing else in the package imports ``oaas_sdk._native`` or patches classes: other modules
ask the runtime's backend (``Runtime.backend``).
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from . import codec
from .errors import ConfigError

if TYPE_CHECKING:
    from .cache import Cache
    from .config import OaasConfig
    from .engine import Engine
    from .stores import Store

__all__ = ["Backend", "select", "native_module", "native_available", "select_codec",
           "server_implementation"]

log = logging.getLogger("oaas_sdk")

_native: ModuleType | None = None
_import_error: BaseException | None = None
try:
    from . import _native as _native_mod

    _native = _native_mod
except ImportError as e:  # extension not built or not importable here
    _import_error = e


def native_module(mode: str) -> ModuleType | None:
    """The extension for ``native=mode``: the module, or ``None`` for the Python path.

    ``"auto"``: the module when it imports; ``"on"``: the module, or :class:`ConfigError`
    when it is missing; ``"off"``: ``None``.
    """
    if mode == "off":
        return None
    if _native is None:
        if mode == "on":
            raise ConfigError(f"native='on' but the extension oaas_sdk._native is missing: "
                              f"{_import_error}")
        log.debug("native extension unavailable, using the Python implementation: %s",
                  _import_error)
    return _native


def native_available() -> bool:
    """Whether ``oaas_sdk._native`` imported in this process."""
    return _native is not None


class Backend:
    """The implementations one configuration uses (see :func:`select`).

    ``native``: the extension module, or ``None`` for pure Python. ``native_engine``:
    whether the engine is the native one (the native extension with a store the SDK
    opens itself: LMDB, Redis and Redis Cluster without redis-py options, see
    :func:`~oaas_sdk.stores.redis.native_target`, and memory, or with the native memory
    store given to the runtime); every other store, and any other store given to the
    runtime, runs the Python engine.
    """

    __slots__ = ("native", "native_engine")

    def __init__(self, native: ModuleType | None, native_engine: bool) -> None:
        self.native = native
        self.native_engine = native_engine

    @property
    def implementation(self) -> str:
        """``"native"`` or ``"python"``."""
        return "native" if self.native is not None else "python"

    def entry_cache(self, max_bytes: int, ttl_s: float | None) -> Cache:
        """A fresh entry cache bounded by ``max_bytes`` (0: caches nothing) whose entries
        expire after ``ttl_s`` seconds (``None``: never); see oaas_sdk/cache/."""
        if self.native is not None:
            from .cache._native import native_entry_cache

            return native_entry_cache(self.native, max_bytes, ttl_s)
        from .cache import EntryCache

        return EntryCache(max_bytes, ttl_s)

    def open_engine(self, config: OaasConfig, store_url: str, store: Store | None,
                    inline: bool) -> Engine:
        """The engine of a runtime: native over the LMDB directory, the Redis server or
        the memory store of ``store_url`` (or over ``store``, a native memory store) when
        :attr:`native_engine`, else the Python engine over ``store`` (or the store
        ``store_url`` opens). ``inline``: commit in the caller's thread (memory store).
        Raises :class:`StorageError` when the store cannot be opened."""
        from .engine import NativeEngine, PythonEngine
        from .stores import lmdb_location, open_store, parse_storage_url
        from .stores.memory import NativeMemoryStore

        settings = engine_settings(config)
        if self.native_engine and self.native is not None:
            kind, loc = parse_storage_url(store_url)
            if isinstance(store, NativeMemoryStore) or kind == "memory":
                memory = (store if isinstance(store, NativeMemoryStore)
                          else NativeMemoryStore(self.native))
                return NativeEngine(self.native, "", **settings, memory=memory)
            if kind in ("redis", "redis+cluster"):
                from .stores.redis import native_target

                target = native_target(loc)
                if target is not None:
                    url, prefix, name, cluster, ca_file = target
                    return NativeEngine(self.native, url, **settings, redis=(
                        prefix, name, config.store_retry_deadline_s, cluster, ca_file,
                        config.store_wait_replicas, config.store_wait_timeout_s))
            path, opts = lmdb_location(loc)
            return NativeEngine(self.native, path, **settings, **opts)  # type: ignore[arg-type]
        opened = store or open_store(store_url, sync=True,
                                     retry_deadline_s=config.store_retry_deadline_s,
                                     wait_replicas=config.store_wait_replicas,
                                     wait_timeout_s=config.store_wait_timeout_s)
        return PythonEngine(opened, **settings, inline=inline)

    def mapped_file(self, path: str | None, size: int) -> Any:
        """A handle of a mapped field's file (``path``; ``None``: anonymous memory) of
        ``size`` bytes: the native ``MappedFile`` for a file when native, else
        :class:`~oaas_sdk.mapped.PyMappedFile` (same files, same bytes)."""
        if self.native is not None and path is not None:
            return self.native.MappedFile(path, size)
        from .model.mapped import PyMappedFile

        return PyMappedFile(path, size)


def engine_settings(config: OaasConfig) -> dict[str, Any]:
    """The engine's settings from ``config`` (the one source of their defaults):
    ``durability``, ``batch_max_entries``, ``batch_max_delay_ms``, ``pending_max_bytes``."""
    return {"durability": config.durability, "batch_max_entries": config.batch_max_entries,
            "batch_max_delay_ms": config.batch_max_delay_ms,
            "pending_max_bytes": config.pending_max_bytes}


def select_codec(mode: str) -> ModuleType | None:
    """Point the process-wide codec at the implementation for ``native=mode`` (the CLI's
    choice, with no runtime); returns the native module or ``None``. Errors as
    :func:`native_module`."""
    native = native_module(mode)
    codec.set_backend(native)
    return native


def select(config: OaasConfig, store: Store | None = None) -> Backend:
    """Choose the implementations for ``config`` (``config.native``: ``"auto"``, ``"on"``,
    ``"off"``), once per runtime: the codec (process-wide: the latest configuration
    picks), ``OaasObject``'s hot methods, and the returned :class:`Backend`'s cache,
    engine and mapped-file factories. ``store``: a store given to the runtime (the engine
    is then the Python one, except for a native memory store with the native
    implementation). Raises :class:`ConfigError` for ``native="on"`` without the
    extension."""
    from .stores import parse_storage_url
    from .stores.memory import NativeMemoryStore

    native = select_codec(config.native)
    kind, _ = parse_storage_url("memory" if config.mock_mode else config.storage)
    if store is None:
        native_store = kind in ("lmdb", "memory") or (
            kind in ("redis", "redis+cluster") and _native_redis(config.storage))
    else:
        native_store = isinstance(store, NativeMemoryStore)
    backend = Backend(native, native is not None and native_store)
    _install_object_methods(native, backend.native_engine)
    return backend


def _native_redis(url: str) -> bool:
    """Whether the native Redis store serves ``url`` (see ``stores.redis.native_target``)."""
    from .stores.redis import native_target

    return native_target(url) is not None


# The native methods made for the last extension module used: (module, __setattr__,
# commit_async, commit, __del__).
_object_methods: tuple[Any, Any, Any, Any, Any] | None = None


def _install_object_methods(native: ModuleType | None, native_engine: bool) -> None:
    """Make ``OaasObject.__setattr__``, ``__del__`` and, when the engine is the native one,
    ``OaasObject.commit_async`` and ``OaasObject.commit`` the native methods of
    ``native`` (one call with no Python frame, same behaviour as the Python definitions,
    which the native ``commit_async`` / ``commit`` call for every case but the one-call
    commit), or, with ``None``, the Python definitions again."""
    global _object_methods
    from .model.methods import use_native
    from .model.object import (
        _PY_COMMIT,
        _PY_COMMIT_ASYNC,
        _PY_CREATE,
        _PY_DEL,
        _PY_SETATTR,
        OaasObject,
        _set_lifecycle,
    )

    life = _lifecycle(native)
    _set_lifecycle(life)
    use_native(native)  # method calls and async getters
    if native is None:
        OaasObject.create = _PY_CREATE  # type: ignore[method-assign]
        OaasObject.__setattr__ = _PY_SETATTR  # type: ignore[method-assign]
        OaasObject.commit_async = _PY_COMMIT_ASYNC  # type: ignore[method-assign]
        OaasObject.commit = _PY_COMMIT  # type: ignore[method-assign]
        OaasObject.__del__ = _PY_DEL  # type: ignore[method-assign]
        return
    if _object_methods is None or _object_methods[0] is not native:
        from .model.state import UNCACHED
        from .stores import StoredObject

        _object_methods = (native, native.object_setattr(OaasObject),
                           native.object_commit_async(OaasObject),
                           native.object_commit(OaasObject),
                           native.object_finalizer(OaasObject, UNCACHED, StoredObject))
    # The finalizer: the C tp_finalize of OaasObject and every subclass (slot wrapper).
    OaasObject.__del__ = _object_methods[4]  # type: ignore[method-assign]
    # create: one native call (Lifecycle.create_entry; the cold load is one too).
    OaasObject.create = classmethod(life.create_entry)  # type: ignore[method-assign, assignment]
    OaasObject.__setattr__ = _object_methods[1]  # type: ignore[method-assign]
    # On the Python engine the native commit methods could only call the Python ones.
    OaasObject.commit_async = (  # type: ignore[method-assign]
        _object_methods[2] if native_engine else _PY_COMMIT_ASYNC)
    OaasObject.commit = (  # type: ignore[method-assign]
        _object_methods[3] if native_engine else _PY_COMMIT)


# The native create and load made for the last extension module used: (module, Lifecycle).
_lifecycles: tuple[Any, Any] | None = None


def _lifecycle(native: ModuleType | None) -> Any:
    """The native create and load of ``native`` (``_native.Lifecycle`` over the object
    model's ObjectState and ObjectMeta and the identity map's weak references), or
    ``None`` for the Python steps (``OaasObject.create`` / ``load``)."""
    global _lifecycles
    if native is None:
        return None
    if _lifecycles is None or _lifecycles[0] is not native:
        import os
        import weakref

        from . import runtime
        from .engine._native import NativeEngine, _NativeStoreView
        from .errors import ObjectNotFound
        from .model import registry
        from .model.object import _PY_CREATE
        from .model.state import ObjectState
        from .stores import StoredObject
        from .stores.memory import NativeMemoryStore

        life = native.Lifecycle(ObjectState, registry.ObjectMeta, weakref.KeyedRef,
                                weakref.WeakValueDictionary)

        def seed() -> tuple[int, int]:
            # The Python generator's node with its lowest bit flipped: the two generators
            # of this process never make the same id (model/registry.py new_object_id).
            return registry._ids.node ^ 1, int.from_bytes(os.urandom(8), "big")

        life.bind(runtime, _PY_CREATE.__func__, StoredObject,
                  ObjectNotFound, NativeEngine, NativeMemoryStore, _NativeStoreView, *seed())
        registry._reseed_hooks.append(lambda: life.seed_ids(*seed()))
        _lifecycles = (native, life)
    return _lifecycles[1]


def server_implementation(config: OaasConfig) -> Literal["native", "python"]:
    """Which server ``oaas.start_server()`` runs for ``config``: ``"native"`` when the
    native implementation is selected (``native="on"``, or ``"auto"`` with the extension
    present) and the extension has the server, else ``"python"`` (grpcio). Raises
    :class:`~oaas_sdk.errors.ConfigError` for ``native="on"`` without the extension."""
    mod = native_module(config.native)
    return "native" if mod is not None and hasattr(mod, "NativeServer") else "python"
