"""Type stub of the native extension ``oaas_sdk._native`` (built from ``oprc-py/``).

Private: users go through ``oaas_sdk``; the package decides which implementation runs.
"""

import asyncio
import contextvars
from collections.abc import Callable, Generator, Sequence
from typing import Any

from typing_extensions import Buffer

from oaas_sdk.stores import ObjectKey, StoredObject

__version__: str

def build_profile() -> str:
    """``"release"`` or ``"debug"``: the Cargo profile the extension was compiled with."""

def build_info() -> dict[str, object]:
    """``{"version": str, "profile": str, "components": list[str],
    "allocator": {"name": "mimalloc", "purge_delay_ms": int}}`` (-1 = never purge)."""

# --- engine (oprc-py/src/engine/) ------------------------------------------------------

class Ticket:
    """Completion of one commit submitted to :class:`Engine`."""

    @property
    def error(self) -> BaseException | None:
        """``ConflictError`` / ``StorageError`` of a failed commit, else ``None``."""
    def done(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> None:
        """Block with the GIL released; raise the commit's error; ``TimeoutError`` after
        ``timeout`` seconds."""

class CommitFuture:
    """The future of a durable one-call commit: asyncio's future protocol (``await``,
    ``asyncio.gather`` / ``wait_for`` / ``shield`` take it as a future). Made
    and resolved by :class:`Engine`; its done-callbacks run from :meth:`Engine.take_ready`
    on the loop's thread (docs/engine.md)."""

    _asyncio_future_blocking: bool
    def get_loop(self) -> asyncio.AbstractEventLoop: ...
    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def result(self) -> None: ...
    def exception(self) -> BaseException | None: ...
    def cancel(self, msg: Any = None) -> bool: ...
    def add_done_callback(self, fn: Callable[[CommitFuture], object], *,
                          context: contextvars.Context | None = None) -> None: ...
    def remove_done_callback(self, fn: Callable[[CommitFuture], object]) -> int: ...
    def __await__(self) -> Generator[Any]: ...
    def __iter__(self) -> Generator[Any]: ...
    def __next__(self) -> Any: ...
    # The coroutine protocol, as every awaitable ``commit_async`` returns: ``asyncio.run``
    # and ``asyncio.create_task`` take it.
    def send(self, value: Any = None) -> Any: ...
    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any: ...
    def close(self) -> None: ...


class MemoryStore:
    """Objects in process memory with the durable stores' version checks
    (``oprc-py/core/src/store/memory.rs``); shared by every :class:`Engine` given it."""

    def __init__(self) -> None: ...
    @property
    def name(self) -> str:
        """``"memory store"``."""
    def __len__(self) -> int: ...
    def read(self, cls_id: str, partition_id: int,
             object_id: int | str) -> tuple[int, int, int, dict[str, bytes]] | None:
        """``(version, created_ms, updated_ms, {field: bytes})`` or ``None``."""
    def write_batch(self, records: list[tuple[str, int, int | str, int, dict[str, bytes],
                                              list[str], bool, int]]) -> list[str | None]:
        """Apply ``(cls_id, partition_id, object_id, expected_version, entries, deletes,
        delete_object, time_ms)`` records in order; per record ``None`` or the conflict."""
    def scan(self, prefix: bytes) -> list[bytes]:
        """Object keys starting with ``prefix``, in key order."""


class Engine:
    """Native batcher + persister over an LMDB environment in directory ``path``, or,
    with ``redis=(prefix, name, retry_deadline_s, cluster, ca_file, wait_replicas,
    wait_timeout_s)``, over the Redis server of URL ``path`` (``cluster``: the Redis
    Cluster of the startup node URLs in ``path``, one per line; ``ca_file``: PEM CA
    certificates for TLS; ``WAIT`` for ``wait_replicas`` replicas, at most
    ``wait_timeout_s`` seconds, after each batch when > 0), or, with
    ``memory=store``, over that :class:`MemoryStore`, written in the committing thread
    (no persister; a commit is done when submitted).

    Raises ``StorageError`` when the store cannot be opened (a file, a corrupt or foreign
    environment, no permission; a Redis server unreachable within the deadline)."""

    def __init__(self, path: str, *, durability: str, batch_max_entries: int,
                 batch_max_delay_ms: float, pending_max_bytes: int, map_size: int = 1 << 30,
                 max_map_size: int = 1 << 40,
                 redis: tuple[str, str, float, bool, str | None, int, float] | None = None,
                 memory: MemoryStore | None = None) -> None:
        """The settings without defaults come from ``OaasConfig`` (``ENGINE_DEFAULTS``)."""
    @property
    def name(self) -> str: ...
    def submit(self, cls_id: str, partition_id: int, object_id: int | str,
               expected_version: int, entries: dict[str, bytes], deletes: list[str] = ...,
               delete_object: bool = False, time_ms: int = 0, token: int = 0) -> Ticket:
        """Queue one commit; a non-zero ``token`` also reports its outcome through
        :meth:`take_completions`."""
    def commit_object(self, obj: Any, encoders: dict[str, Any]) -> None:
        """Encode the dirty fields of a committed ``OaasObject`` and its live mutable
        fields whose bytes changed, queue the commit and apply and settle it on the object,
        in one call (acknowledged once queued; nothing queued when nothing changed).
        Encoding errors propagate with ``_oaas_field`` set; ``StorageError`` when closed."""
    def commit_object_wait(self, obj: Any, encoders: dict[str, Any]) -> None:
        """``commit_object`` of the blocking ``commit()``: with ``durability="sync"``
        returns once written (GIL released while waiting) or raises the commit's error
        after undoing the object's changes."""
    def commit_object_future(self, obj: Any, encoders: dict[str, Any],
                             event_loop: Any) -> CommitFuture | None:
        """``commit_object`` of a durable commit: returns a future of ``event_loop``,
        resolved by :meth:`take_ready` (``here=event_loop``) or through the loop's
        ``call_soon_threadsafe``; on failure ``obj._oaas_undo_entries`` runs first.
        ``None`` when nothing changed (the object is settled, nothing queued)."""
    def take_completions(self, timeout: float | None = None
                         ) -> list[tuple[int, BaseException | None]] | None:
        """Outcomes of token-carrying commits (typically one batch), ``[]`` on timeout
        (seconds), ``None`` once closed; blocks with the GIL released."""
    def notify_fd(self) -> int:
        """Read end of a pipe the persister writes a byte to when token-carrying commits
        complete (at most once per :meth:`take_ready`); for ``loop.add_reader``."""
    def take_ready(self, here: Any = None) -> list[tuple[int, BaseException | None]]:
        """The completions available now, without blocking (``[]`` when closed); the
        futures of :meth:`commit_object_future` are resolved instead (at once when their
        loop is ``here``)."""
    def read(self, cls_id: str, partition_id: int, object_id: int | str
             ) -> tuple[int, int, int, dict[str, bytes]] | None:
        """``(version, created_ms, updated_ms, entries)`` or ``None``; GIL released."""
    def scan(self, prefix: bytes) -> list[bytes]: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self) -> list[tuple[int, BaseException | None]]:
        """Write everything queued, stop the persister, close the store; returns the
        completions nobody took. Idempotent."""
    def map_size(self) -> int: ...
    def stats(self) -> dict[str, float | int]: ...
    def failure_log(self) -> FailureLog:
        """The engine's :class:`FailureLog`; ``StorageError`` when closed."""

class FailureLog:
    """Failures no caller is told of (a failed batch; a write-back failed after its
    acknowledgement), as lines for the ``oaas_sdk`` logger. Holds the log only, not the
    engine; at most 1024 lines wait, later ones are counted in one line."""

    def take(self, timeout: float | None = None) -> list[str] | None:
        """Block (GIL released) until lines are there and take them all; ``[]`` after
        ``timeout`` seconds; ``None`` once the engine is closed and every line taken."""
    def wait(self, timeout: float | None = None) -> bool | None:
        """Block (GIL released) until lines are there (``True``) or ``timeout`` seconds
        pass (``False``), taking nothing; ``None`` once closed and every line taken."""

class MappedFile(Buffer):
    """A file of exactly ``size`` bytes mapped shared and writable (memmap2); the buffer
    protocol gives zero-copy views. ``ValueError`` when an existing file has another size,
    ``StorageError`` when it cannot be created or mapped."""

    def __init__(self, path: str, size: int) -> None: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def flush(self) -> None:
        """msync (MS_SYNC) with the GIL released."""
    def close(self) -> None: ...

OBJECT_STATE_ATTR: str
"""The instance attribute holding an object's ``ObjectState`` (``"_oaas_state"``)."""
OBJECT_STATE_FIELDS: tuple[str, ...]
"""The ``ObjectState`` slot names the native layer reads (``oaas_sdk.model.state``)."""
OBJECT_CLASS_ATTRS: tuple[str, ...]
"""Attributes and methods of ``OaasObject`` the native layer uses (``CLASS_ATTRS``)."""
OBJECT_ERROR_FIELD_ATTR: str
"""The attribute an encoding error gets, naming its field (``"_oaas_field"``)."""

def object_setattr(cls: type) -> Any:
    """A method descriptor of ``cls`` (``OaasObject``) running the native ``__setattr__``
    (the seam, ``oaas_sdk._backend``, installs it)."""

def object_commit_async(cls: type) -> Any:
    """A method descriptor of ``cls`` (``OaasObject``) running the native ``commit_async``:
    the one-call commit, else ``cls._oaas_py_commit_async`` (``oaas_sdk._backend``
    installs it)."""

class MethodCall:
    """The awaitable of one method call (oprc-py/src/object/method.rs): turn, undo log,
    body, rollback, auto-commit. A coroutine too (``send``/``throw``/``close``)."""

    def __await__(self) -> Any: ...
    def __iter__(self) -> Any: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any) -> Any: ...
    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any: ...
    def close(self) -> None: ...

class Ready:
    """An awaitable resolved at once with a value (async getters). A coroutine too."""

    def __await__(self) -> Any: ...
    def __iter__(self) -> Any: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any) -> Any: ...
    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any: ...
    def close(self) -> None: ...

class AsyncGetter:
    """The native async getter of a field of an immutable type (``model/methods.py``
    installs it as the class attribute): a vectorcall method descriptor; ``obj.get_x()``
    is a :class:`Ready` of ``obj.x`` read now."""

    field: str
    def __init__(self, field: str) -> None: ...
    def __call__(self, obj: Any) -> Ready: ...
    def __get__(self, obj: Any, owner: Any = None) -> Any: ...

class AsyncMethod:
    """The native wrapper of an async method or setter (a vectorcall method descriptor):
    ``obj.m(*args, **kwargs)`` is ``method_call(spec, obj, args, kwargs)``."""

    spec: Any
    def __init__(self, spec: Any) -> None: ...
    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> MethodCall: ...
    def __get__(self, obj: Any, owner: Any = None) -> Any: ...

def method_call(spec: Any, obj: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> MethodCall:
    """The awaitable of an async method (or setter) call of ``spec`` (a ``MethodSpec``) on
    ``obj``; nothing runs until it is awaited (``oaas_sdk.model.calls._call_async`` is the
    reference)."""

def method_call_sync(spec: Any, obj: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    """Run a sync method (or setter) call now and return its result
    (``oaas_sdk.model.calls._call_sync`` is the reference)."""

def ready(value: Any) -> Ready:
    """An awaitable whose ``await`` gives ``value``."""

def ready_attr(obj: Any, name: str) -> Ready:
    """An awaitable whose ``await`` gives ``getattr(obj, name)`` read now."""

class Lifecycle:
    """Create and load of OaaS objects in one native call (``object/create.rs``); made by
    the seam (``oaas_sdk._backend``), which installs ``create_entry`` as
    ``OaasObject.create``; ``OaasObject.load`` calls ``load_cold``."""

    def __init__(self, state_type: type, meta_type: type, keyed_ref: type,
                 weak_dict: type) -> None: ...
    def bind(self, runtime: Any, py_create: Any, stored_object: type, not_found: type,
             native_engine: type, memory_store: type, store_view: type, node: int,
             seed: int) -> None:
        """What the native entries need of the Python side (once; ``RuntimeError`` when
        bound twice): the runtime module, the Python ``create`` function, the record and
        error types, the native engine's adapter and store types, the id generator's
        12-bit node and seed."""
    def seed_ids(self, node: int, seed: int) -> None:
        """Seed the id generator again (a forked child)."""
    def new_object_id(self) -> int:
        """A fresh 63-bit object id (layout of ``model.registry.new_object_id``)."""
    def create(self, cls: type, rt: Any, key: tuple[str, int, int | str],
               plan: tuple[tuple[str, int, Any], ...], live: tuple[str, ...],
               values: dict[str, Any] | None = None) -> Any:
        """A new object (defaults by ``plan``, ``values`` assigned), registered in
        ``rt.identity`` and ``rt.dirty``; errors leave nothing registered."""
    def create_entry(self, cls: type, obj_id: int | str | None = None, local: Any = None,
                     *, partition_id: int | None = None, **values: Any) -> Any:
        """``OaasObject.create`` in one call; the cases it does not take (and every error)
        go to the Python definition."""
    def load_cold(self, cls: type, rt: Any, key: tuple[str, int, int | str],
                  plan: tuple[tuple[str, Any, Any], ...]) -> Any:
        """The cold part of ``OaasObject.load``: the record from the cache or the engine,
        decoded onto a new registered instance; ``ObjectNotFound`` when absent."""

def object_commit(cls: type) -> Any:
    """A method descriptor of ``cls`` (``OaasObject``) running the native ``commit``: the
    one-call commit (waited for with the GIL released), else ``cls._oaas_py_commit``
    (``oaas_sdk._backend`` installs it)."""

# ------------------------------------------------------------------ data path (data.rs)
# Byte format: docs/format.md, "State codec". Used through oaas_sdk.codec and
# oaas_sdk.runtime; see docs/native.md.


class Plan:
    """A compiled encode plan of one field type (``Codec.plan``); opaque."""

class DecodePlan:
    """A compiled decode plan of one field type (``Codec.decode_plan``); opaque."""

class Coder:
    """Native ``encode``/``decode`` of one field type (``Codec.coder``), kept in the
    ``FieldType``'s ``_ncoder`` slot. ``Coder.install`` makes ``FieldType.encode`` /
    ``decode`` native methods that use it while its codec is the active backend and call
    the field type's ``_encode_slow`` / ``_decode_slow`` otherwise; errors go through its
    ``_encode_failed`` / ``_decode_failed``."""

    @staticmethod
    def install(cls: type, slot: Any) -> None:
        """Make ``cls.encode`` / ``cls.decode`` the native methods; ``slot``: the member
        descriptor of the object slot holding each instance's coder."""

class Codec:
    """The native state codec. Built once per process by ``codec.set_backend``."""

    def __init__(self, helpers: dict[str, Any]) -> None:
        """``helpers``: the Python types and functions of ``codec._native_helpers()``."""
    def set_active(self, active: bool) -> None:
        """Called by ``codec.set_backend``: whether this codec is the active backend."""
    def set_ref_factory(self, factory: Callable[[str, int, int | str], Any]) -> None:
        """The default reference factory (``codec.set_default_ref_factory``) for coders."""
    def coder(
        self,
        owner: Any,
        exact: tuple[type, ...],
        any: bool,
        plan: Plan,
        decode_plan: DecodePlan,
        view_min: int,
    ) -> Coder:
        """The coder of a field type: ``owner`` a weak reference to the ``FieldType``,
        ``exact`` its ``_pexact``, ``any`` its ``_any``, ``view_min`` ``ZERO_COPY_MIN``."""
    def plan(self, desc: tuple[Any, ...]) -> Plan:
        """Compile ``codec._plan_desc(field_type)``; ValueError for an unknown node."""
    def decode_plan(self, desc: tuple[Any, ...]) -> DecodePlan:
        """Compile ``codec._decode_plan_desc(field_type)``."""
    def decode_with(
        self,
        data: bytes | bytearray | memoryview,
        plan: DecodePlan,
        ref_factory: Callable[[str, int, int | str], Any],
        view_min: int = 0,
    ) -> Any:
        """Bytes -> value of a hinted field (errors as ``FieldType.decode``)."""
    def encode(self, value: Any) -> bytes:
        """``value`` under an ``Any`` hint -> its bytes. TypeError for unsupported types,
        SerializationError for unrepresentable values (surrogates, keys, depth > 100)."""
    def encode_plan(self, value: Any, plan: Plan) -> bytes:
        """``value`` for a hinted field (errors as ``FieldType.encode``)."""
    def encode_many(self, values: list[Any], plans: list[Plan | None] | None = None) -> list[bytes]:
        """One call for many values (``None`` plan: ``Any``). The exception of a failing
        value carries ``_oaas_index``; Ctrl-C interrupts long batches."""
    def decode(
        self,
        data: bytes | bytearray | memoryview,
        ref_factory: Callable[[str, int, int | str], Any] | None = None,
        view_min: int = 0,
    ) -> Any:
        """Bytes -> value (raw tuples/sets/``_RawRef`` for hint code when ``ref_factory`` is
        None). ``view_min > 0``: bin values and ndarray data of at least that many bytes
        are read-only views into ``data``. SerializationError for malformed input."""

class EntryCache:
    """Native ``oaas_sdk.cache.EntryCache`` (moka): bounded by bytes, optional TTL,
    LRU, lookups and inserts with the GIL released."""

    max_bytes: int
    ttl_s: float | None
    def __init__(
        self, max_bytes: int, ttl_s: float | None = None, record_type: type | None = None
    ) -> None:
        """``max_bytes``: bound (bytes; 0 disables); ``ttl_s``: seconds or None;
        ``record_type``: what ``get`` builds (default ``StoredObject``)."""
    def get(self, key: ObjectKey) -> StoredObject | None: ...
    def put(self, key: ObjectKey, obj: StoredObject) -> None: ...
    def update(
        self,
        key: ObjectKey,
        version: int,
        time_ms: int,
        entries: dict[str, bytes],
        deletes: Sequence[str] = (),
    ) -> None: ...
    def discard(self, key: ObjectKey) -> None: ...
    def clear(self) -> None: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    def __len__(self) -> int: ...


# -- rpc (oprc-py/src/rpc.rs; the server itself: oprc-py/rpc, crate oprc-rpc) ---------------

class Completer:
    """Completes one call of a :class:`NativeServer` (later calls do nothing)."""

    @property
    def id(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def __call__(self, status: int, payload: bytes | None, headers: dict[str, str],
                 invocation_id: str) -> None: ...
    def fail(self, message: str) -> None: ...

class NativeServer:
    """The tonic ``oprc.OprcFunction`` server; binds and serves on construction (``OSError``
    when the address cannot be bound, ``ValueError`` for a malformed host or TLS
    certificate/key). ``entry(is_obj, cls_id, fn_id, object_id, partition_id, payload,
    options, done)`` runs each call on the loop that drains it; ``drain()`` returns the
    ids of calls passed on earlier whose client has gone since."""

    def __init__(self, host: str, port: int, max_message_bytes: int,
                 entry: Callable[[bool, str, str, str | None, int, bytes, dict[str, str],
                                  Completer], None],
                 tls_cert: bytes | None = None, tls_key: bytes | None = None,
                 tls_client_ca: bytes | None = None) -> None: ...
    @property
    def port(self) -> int: ...
    @property
    def inflight(self) -> int: ...
    @property
    def io_threads(self) -> int: ...
    @property
    def wake_fd(self) -> int: ...
    def drain(self) -> list[int]: ...
    def stop(self, grace: float | None) -> None: ...
    def wait_stopped(self, timeout: float | None = None) -> bool | None: ...
