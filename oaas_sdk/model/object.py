"""``OaasObject``: the base class of OaaS objects, their fields, life cycle and commits.

Reads of a field are plain attribute reads: the decoded value is an instance attribute,
the class defines no ``__getattr__`` and the SDK never materialises the instance ``__dict__``,
so CPython's specialised attribute load applies (a Python ``__getattr__`` on the class, or
touching ``obj.__dict__``, would make every read 2-3x slower on CPython 3.11).
Fields of immutable types are decoded when an object is loaded. Fields of mutable types
(list, dict, models, ...) are decoded on first read through a non-data descriptor
(:class:`_LazyField`), which also marks the object as a candidate for in-place changes;
at commit those fields are re-encoded and compared with the committed bytes, and then
*parked* (kept decoded, removed from the instance) so the next read marks the object again.
Writes go through ``__setattr__``, which converts the value to the field's type and marks
the field dirty. See ``docs/guide.md``.
"""

from __future__ import annotations

import asyncio
import reprlib
import typing
from collections.abc import Awaitable, Iterable
from typing import Any, ClassVar, TypeVar

from .. import codec
from ..engine import thrown
from ..errors import ConflictError, ObjectNotFound, SerializationError
from ..runtime import Runtime, current
from ..stores import ObjectKey, StoredObject, WriteRecord, check_identity
from .fields import (
    FieldInfo,
    _FieldDefault,
    _has_reference,
    _is_classvar,
    _LazyField,
    _type_hints,
    field,
)
from .fields import _resolve_hint as _resolve_hint  # re-exported (old oaas_sdk.object)
from .mapped import MappedField, flush_mapped
from .methods import collect_methods
from .registry import _CLASSES as _CLASSES  # re-exported (old oaas_sdk.object)
from .registry import (
    ObjectMeta,
    _now_ms,
    class_by_id,
    new_object_id,
    registered_classes,
)
from .state import ERROR_FIELD_ATTR, STATE_ATTR, UNCACHED, ObjectState

if typing.TYPE_CHECKING:
    from ..compat import Session
    from .ref import ObjectRef

__all__ = ["OaasObject", "ObjectMeta", "FieldInfo", "class_by_id", "registered_classes",
           "field", "new_object_id"]

T = TypeVar("T", bound="OaasObject")

# Names an OaaS field may not take: the attributes OaasObject itself defines.
_RESERVED = frozenset({
    "meta", "object_id", "commit", "commit_async", "delete", "delete_async", "as_ref",
    "create", "load", "load_or_create", "refresh", "session", "state", "dirty", "remote",
    "fetch", "start_agent", "stop_agent", "get_data", "set_data", "get_data_async",
    "set_data_async", "trigger", "suppress", "create_request", "create_obj_request",
    "exists", "version",
})

class _FieldRepr(reprlib.Repr):
    """__repr__ of fields: long values shortened, as reprlib does; OaaS objects inside as
    their identity (no recursion through references)."""

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, OaasObject):
            m = x._oaas_state.meta
            return f"<{type(x).__name__} {m.cls_id}/{m.partition_id}/{m.object_id}>"
        return super().repr1(x, level)


_REPR = _FieldRepr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 8
_REPR.maxlevel = 3

# The SDK never touches ``obj.__dict__`` of an OaaS object: on CPython 3.11 materialising it
# turns every later attribute read into the slow path (2-3x). These keep inline values.
_get = object.__getattribute__
_set = object.__setattr__


def _only(types: frozenset[type]) -> type | None:
    """The one type of a set of one type, else None (see ``OaasObject._oaas_conv``)."""
    return next(iter(types)) if len(types) == 1 else None
_del = object.__delattr__

# Kinds of a field's default in a class's create plan (OaasObject._oaas_build_plan; the
# native create, oprc-py/src/object/create.rs, reads the same numbers).
_SHARE, _LIST, _DICT, _SET, _CALL = 0, 1, 2, 3, 4
_COPY_KINDS: dict[type, int] = {list: _LIST, dict: _DICT, set: _SET}
_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})
_U32 = 1 << 32
_U64 = 1 << 64

# The native create and load (``oaas_sdk._native.Lifecycle``) when the seam selected the
# native implementation (oaas_sdk/_backend.py), else None: the Python steps below.
_life: Any = None


def _set_lifecycle(life: Any) -> None:
    """Called by the seam only."""
    global _life
    _life = life

class OaasObject:
    """Base class of OaaS objects: subclass it, annotate persisted fields, decorate methods.

    Every public annotated class attribute is a persisted field (``ClassVar`` and names
    starting with ``_`` are not). Create objects with :meth:`create`, load them with
    :meth:`load`; never call the constructor directly.
    """

    # No __slots__: CPython's specialised attribute load is fastest on plain instance
    # attributes (a "__dict__" slot more than doubles the cost of a read). The SDK's
    # bookkeeping is one ObjectState in the attribute "_oaas_state" (never a field name).
    _oaas_state: ObjectState  # the SDK's bookkeeping of this object (model/state.py)

    _oaas_fields: ClassVar[dict[str, FieldInfo]] = {}
    _oaas_mutable: ClassVar[tuple[str, ...] | None] = None
    # field name -> (exact types stored as they are, FieldType, mutable, fast shape, the
    # one exact type or None): the last item lets the native __setattr__ pass a value of
    # the field's only exact type with a pointer comparison instead of a set lookup.
    _oaas_conv: ClassVar[dict[str, tuple[frozenset[type], codec.FieldType, bool, Any,
                                         type | None]] | None] = None
    _oaas_cls_id: ClassVar[str] = "default.OaasObject"
    _oaas_package: ClassVar[str] = "default"
    _oaas_service_name: ClassVar[str] = "OaasObject"
    _oaas_methods: ClassVar[dict[str, Any]] = {}
    _oaas_accessors: ClassVar[dict[str, Any]] = {}  # getters and setters by attribute name
    _oaas_ready: ClassVar[bool] = True
    _oaas_mapped: ClassVar[tuple[str, ...]] = ()  # memory-mapped fields (oaas_sdk.mapped)
    # field name -> encoder, for the native engine's one-call commit (_oaas_build_encoders)
    _oaas_encoders: ClassVar[dict[str, Any] | None] = None
    # For the native commit_async (set below the class): the Python definition, the
    # awaitable of a commit acknowledged at once, error -> failed awaitable.
    _oaas_py_commit_async: ClassVar[Any]
    _oaas_py_commit: ClassVar[Any]
    _oaas_done: ClassVar[Any]
    _oaas_failed: ClassVar[Any]
    # Per class (never inherited: read from cls.__dict__): see _oaas_build_plan.
    _oaas_plan: ClassVar[Any]

    # -- class definition -----------------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: dict[str, FieldInfo] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(getattr(base, "_oaas_fields", {}) or {})
        ann = cls.__dict__.get("__annotations__", {})
        mapped_names = list(getattr(cls, "_oaas_mapped", ()))
        for name, hint in ann.items():
            if name.startswith("_") or _is_classvar(hint):
                continue
            if isinstance(cls.__dict__.get(name), MappedField):
                mapped_names.append(name)  # state lives in a mapped file, not an entry
                continue
            if name in _RESERVED or (name in OaasObject.__dict__):
                raise TypeError(f"{cls.__name__}.{name}: the field name {name!r} is reserved "
                                f"by OaasObject; choose another name")
            default = cls.__dict__.get(name, None)
            factory = None
            if isinstance(default, _FieldDefault):
                default, factory = default.default, default.default_factory
            fields[name] = FieldInfo(name, cls, hint, default, factory)
            # Until the class is finalized every field has a lazy descriptor; immutable ones
            # lose it then (see _oaas_finalize).
            setattr(cls, name, _LazyField(name))
        cls._oaas_fields = fields
        cls._oaas_ready = False
        cls._oaas_mapped = tuple(mapped_names)
        # Refuse unsupported hints at definition; forward references that cannot be resolved
        # yet (a class defined later) are compiled on first use.
        try:
            resolved = _type_hints(cls)
        except Exception:
            resolved = {}
        for name in ann:
            f = fields.get(name)
            if f is not None and f.owner is cls and name in resolved:
                f.annotation = resolved[name]
                f.ftype  # noqa: B018
        cls._oaas_mutable = None
        cls._oaas_conv = None
        cls._oaas_encoders = None
        cls._oaas_service_name = cls.__name__
        cls._oaas_package = getattr(cls, "_oaas_package", "default")
        cls._oaas_cls_id = f"{cls._oaas_package}.{cls.__name__}"
        collect_methods(cls)

    @classmethod
    def _oaas_finalize(cls) -> None:
        """Resolve every field's type (forward references included) and keep lazy
        descriptors only for mutable fields. Runs once, at the first create or load."""
        for base in reversed(cls.__mro__):
            if not base.__dict__.get("_oaas_ready", True):
                setattr(base, "_oaas_ready", True)  # noqa: B010
        for name, f in cls._oaas_fields.items():
            f.ftype  # noqa: B018 - resolves the hint; TypeError when unsupported
            desc = cls.__dict__.get(name)
            if f.mutable and not isinstance(desc, _LazyField):
                setattr(cls, name, _LazyField(name))
            elif not f.mutable and isinstance(desc, _LazyField):
                delattr(cls, name)  # plain instance-dict reads for immutable fields
        cls._oaas_ready = True

    @classmethod
    def _oaas_mutable_fields(cls) -> tuple[str, ...]:
        m = cls._oaas_mutable
        if m is None:
            m = cls._oaas_mutable = tuple(n for n, f in cls._oaas_fields.items() if f.mutable)
        return m

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError(f"create {type(self).__name__} objects with "
                        f"{type(self).__name__}.create() or .load(id), not the constructor")

    # -- identity & life cycle -----------------------------------------------------------
    @classmethod
    def _blank(cls: type[T], rt: Runtime, meta: ObjectMeta) -> T:
        if not cls._oaas_ready:
            cls._oaas_finalize()
        obj = object.__new__(cls)
        _set(obj, STATE_ATTR, ObjectState(meta, rt))
        return obj

    @classmethod
    def create(cls: type[T], obj_id: int | str | None = None, local: bool | None = None,
               *, partition_id: int | None = None, **values: Any) -> T:
        """Create a new object of this class (not yet committed).

        ``obj_id``: a u64 or a string ``[a-z0-9._:-]{1,160}``; a fresh time-ordered 63-bit
        id when omitted. ``partition_id``: u32, default the configured partition.
        ``local`` is accepted for oaas-sdk2-py compatibility. ``values`` set fields (each
        converted like an assignment). Raises ``ValueError`` for a malformed id,
        :class:`ConflictError` when an object with ``obj_id`` already exists (use
        :meth:`load` or :meth:`load_or_create`), ``TypeError``/:class:`ValidationError` for
        a bad field value.
        """
        rt = current()
        if not cls._oaas_ready:
            cls._oaas_finalize()
        plan = cls.__dict__.get("_oaas_plan") or cls._oaas_build_plan()  # checks cls_id
        pid = rt.config.oprc_partition_default if partition_id is None else partition_id
        if obj_id is None:
            oid: int | str = new_object_id()
            if partition_id is not None:  # a fresh id and the configured partition are valid
                check_identity(cls._oaas_cls_id, pid, oid)
        else:
            oid = obj_id
            check_identity(cls._oaas_cls_id, pid, oid)
        key: ObjectKey = (cls._oaas_cls_id, pid, oid)
        if obj_id is not None and (key in rt.identity or rt.engine.read(key) is not None):
            raise ConflictError(f"cannot create {cls._oaas_cls_id}/{pid}/{oid}: it already "
                                f"exists; use {cls.__name__}.load({oid!r})")
        fields = cls._oaas_fields
        for name in values:
            if name not in fields:
                raise TypeError(f"{cls.__name__}.create(): unknown field {name!r}")
        life = _life
        if life is not None:  # the same steps in one native call (oprc-py object/create.rs)
            return life.create(cls, rt, key, plan[0], plan[1], values or None)
        obj = cls._blank(rt, ObjectMeta(cls._oaas_cls_id, pid, oid))
        st = obj._oaas_state
        for name, kind, v in plan[0]:
            _set(obj, name, v if kind == _SHARE else v() if kind == _CALL else v.copy())
        st.live.update(plan[1])
        for name, value in values.items():
            setattr(obj, name, value)
        st.created_ms = st.updated_ms = _now_ms()
        rt.identity[key] = obj
        rt.dirty[id(obj)] = obj
        return obj

    @classmethod
    def _oaas_build_plan(cls) -> tuple[tuple[tuple[str, int, Any], ...], tuple[str, ...],
                                       tuple[tuple[str, Any, FieldInfo], ...]]:
        """What create and load do per field, built once per class (after
        :meth:`_oaas_finalize`), in field order:

        - defaults: ``(name, kind, value)``; kind ``_SHARE``: ``value`` itself (immutable),
          ``_LIST`` / ``_DICT`` / ``_SET``: a shallow copy of ``value`` (a decoded copy of
          the default holding only scalars, so a shallow copy equals
          ``FieldInfo.new_default()``), ``_CALL``: ``value()`` (``new_default``);
        - the names of the mutable fields (live in a new object);
        - immutable fields decoded at load: ``(name, decode, field)``.
        """
        check_identity(cls._oaas_cls_id, 0, 0)  # ValueError naming a malformed cls_id
        defaults: list[tuple[str, int, Any]] = []
        for name, f in cls._oaas_fields.items():
            if f.default_factory is None and not f._mutable_default:
                defaults.append((name, _SHARE, f.default))
                continue
            template: Any = f.new_default() if f.default_factory is None else None
            kind = _COPY_KINDS.get(type(template), _CALL)
            scalar = kind != _CALL and all(type(x) in _SCALARS for x in template)
            if scalar and kind == _DICT:
                scalar = all(type(x) in _SCALARS for x in template.values())
            defaults.append((name, kind, template) if scalar else (name, _CALL, f.new_default))
        plan = (tuple(defaults), cls._oaas_mutable_fields(),
                tuple((n, f.ftype.decode, f) for n, f in cls._oaas_fields.items()
                      if not f.mutable))
        cls._oaas_plan = plan
        return plan

    @classmethod
    def load(cls: type[T], obj_id: int | str, partition_id: int | None = None) -> T:
        """The object with this id: the live instance when one exists in this process
        (identity map), else read from the cache or the store.

        Raises :class:`ObjectNotFound` (also a ``KeyError``) when there is no such object,
        :class:`StorageError` when the store fails.
        """
        rt = current()
        pid = rt.config.oprc_partition_default if partition_id is None else partition_id
        key: ObjectKey = (cls._oaas_cls_id, pid, obj_id)
        obj = rt.identity.get(key)
        if obj is not None and not obj._oaas_state.deleted:
            return obj  # type: ignore[return-value]
        if not cls._oaas_ready:
            cls._oaas_finalize()
        plan = cls.__dict__.get("_oaas_plan") or cls._oaas_build_plan()  # checks cls_id
        if not (type(obj_id) is int and 0 <= obj_id < _U64 and type(pid) is int
                and 0 <= pid < _U32):
            check_identity(cls._oaas_cls_id, pid, obj_id)
        life = _life
        if life is not None:  # the steps below in one native call (oprc-py object/create.rs)
            return life.load_cold(cls, rt, key, plan[2])
        # While an instance with commits the cache lacks is alive (or awaiting its
        # finalizer), the cache is stale for its key: read through the engine.
        stored = None if key in rt.cache_stale else rt.cache.get(key)
        if stored is None:
            stored = rt.engine.read(key)
            if stored is None:
                raise ObjectNotFound(f"{cls._oaas_cls_id}/{pid}/{obj_id} not found "
                                     f"({rt.engine.store.name})")
            if rt.cache_enabled:
                rt.cache.put(key, StoredObject(stored.version, stored.created_ms,
                                               stored.updated_ms, dict(stored.entries)))
        obj = cls._blank(rt, ObjectMeta(cls._oaas_cls_id, pid, obj_id))
        obj._oaas_apply_stored(stored)
        rt.identity[key] = obj
        return obj

    @classmethod
    def load_or_create(cls: type[T], obj_id: int | str, partition_id: int | None = None,
                       **values: Any) -> T:
        """:meth:`load` the object, or :meth:`create` it with ``values`` when absent."""
        try:
            return cls.load(obj_id, partition_id)
        except ObjectNotFound:
            return cls.create(obj_id, partition_id=partition_id, **values)

    @classmethod
    def exists(cls, obj_id: int | str, partition_id: int | None = None) -> bool:
        """Whether an object with this id is live here or committed in the store."""
        try:
            cls.load(obj_id, partition_id)
            return True
        except ObjectNotFound:
            return False

    def _oaas_apply_stored(self, stored: StoredObject) -> None:
        """Adopt a stored record: immutable fields are decoded now, mutable ones on first
        read. Raises :class:`SerializationError` naming the object and field of a corrupt
        entry (the object is then left unchanged)."""
        decoded = {}
        entries = stored.entries
        for name, f in type(self)._oaas_fields.items():
            if not f.mutable:
                decoded[name] = self._oaas_decode(name, f, entries.get(name))
        st = self._oaas_state
        st.version = stored.version
        st.committed = entries
        st.created_ms = stored.created_ms
        st.updated_ms = stored.updated_ms
        for name, value in decoded.items():
            _set(self, name, value)

    @classmethod
    def __oaas_from_identity__(cls, cls_id: str, partition_id: int,
                               object_id: int | str) -> Any:
        """Rebuild a reference field's value: the live object, or an ``ObjectRef`` when it
        no longer exists."""
        target = class_by_id(cls_id) or cls
        try:
            return target.load(object_id, partition_id)
        except ObjectNotFound:
            from .ref import ObjectRef

            return ObjectRef._of(cls_id, partition_id, object_id)

    @property
    def __oaas_identity__(self) -> tuple[str, int, int | str]:
        m = self._oaas_state.meta
        return (m.cls_id, m.partition_id, m.object_id)

    @property
    def meta(self) -> ObjectMeta:
        """Identity of this object (cls_id, partition_id, object_id)."""
        return self._oaas_state.meta

    @property
    def object_id(self) -> int | str:
        """The object's id (u64 or string)."""
        return self._oaas_state.meta.object_id

    @property
    def version(self) -> int:
        """Committed version this process knows (0: never committed)."""
        return self._oaas_state.version

    @property
    def session(self) -> Session:
        """oaas-sdk2-py's ``obj.session``: ``await obj.session.commit_async()`` commits
        every object with uncommitted changes (see :class:`~oaas_sdk.compat.Session`)."""
        from ..compat import Session

        return Session(self._oaas_state.rt)

    def as_ref(self) -> ObjectRef:
        """An :class:`~oaas_sdk.ObjectRef` to this object: identity only; calls on it go
        through the engine."""
        from .ref import ObjectRef

        m = self._oaas_state.meta
        return ObjectRef._of(m.cls_id, m.partition_id, m.object_id)

    def __repr__(self) -> str:
        """``Counter(object_id=1, count=2, history=['+1', '+1'])``, as pydantic's repr;
        ``partition_id`` shown when not 0, long values shortened (``reprlib``). Reads no
        field through the object: nothing is decoded into it or marked as read."""
        cls = type(self)
        try:
            m = self._oaas_state.meta
        except AttributeError:  # not made by create/load
            return f"<{cls.__name__} (uninitialised)>"
        parts = [f"object_id={m.object_id!r}"]
        if m.partition_id:
            parts.append(f"partition_id={m.partition_id}")
        for name, f in cls._oaas_fields.items():
            try:
                text = _REPR.repr(self._oaas_peek(name, f))
            except Exception as e:  # a corrupt entry, a failing __repr__ of a value
                text = f"<{type(e).__name__}>"
            parts.append(f"{name}={text}")
        return f"{cls.__name__}({', '.join(parts)})"

    def _oaas_peek(self, name: str, f: FieldInfo) -> Any:
        """A field's value for display, leaving the object as it was: never through the
        lazy descriptor (which would mark the object read), never loading a referenced
        object (references show as ``ObjectRef``)."""
        st = self._oaas_state
        if not f.mutable or name in st.live:
            return _get(self, name)  # in the instance (mutable: decoded and live)
        if name in st.parked:
            return st.parked[name]
        data = st.committed.get(name)
        if data is None:
            return f.new_default()
        if _has_reference(f.ftype.hint):
            return codec.decode(data)  # references decode to ObjectRef: nothing loaded
        return f.ftype.decode(data)

    # -- field access ---------------------------------------------------------------------
    def _oaas_materialize(self, name: str, f: FieldInfo) -> Any:
        st = self._oaas_state
        parked = st.parked
        if name in parked:
            return parked.pop(name)
        return self._oaas_decode(name, f, st.committed.get(name))

    def _oaas_decode(self, name: str, f: FieldInfo, data: bytes | None) -> Any:
        if data is None:
            return f.new_default()  # a field added after the object was stored
        try:
            return f.ftype.decode(data)
        except SerializationError as e:
            m = self._oaas_state.meta
            raise SerializationError(f"{m.cls_id}/{m.partition_id}/{m.object_id} field "
                                     f"{name!r}: stored entry is corrupt: {e}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        conv = cls._oaas_conv
        if conv is None:
            conv = cls._oaas_build_conv()
        c = conv.get(name)
        if c is None:
            object.__setattr__(self, name, value)
            return
        if type(value) not in c[0]:  # exact type of the field: nothing to convert
            value = c[1].coerce(value, owner=cls.__name__, field=name)
        _set(self, name, value)
        st = self._oaas_state
        if c[2]:  # a mutable field: live from now on (only mutable fields are parked)
            st.live.add(name)
            if st.parked:
                st.parked.pop(name, None)
        dirty = st.dirty
        if not dirty:  # invariant: an object with dirty fields is in the dirty registry
            st.rt.dirty[id(self)] = self
        dirty.add(name)

    @classmethod
    def _oaas_build_conv(cls) -> dict[str, tuple[frozenset[type], codec.FieldType, bool, Any,
                                                  type | None]]:
        conv = {n: (f.ftype.passthrough_types, f.ftype, f.mutable, f.ftype.fast_shape,
                    _only(f.ftype.passthrough_types))
                for n, f in cls._oaas_fields.items()}
        cls._oaas_conv = conv
        cls._oaas_encoders = None
        return conv

    @classmethod
    def _oaas_build_encoders(cls) -> dict[str, Any]:
        """Field name -> ``FieldType``, for the native engine's one-call commit (which
        calls each type's ``encode``, a native method once the extension is loaded)."""
        enc = {n: f.ftype for n, f in cls._oaas_fields.items()}
        cls._oaas_encoders = enc
        return enc

    def __delattr__(self, name: str) -> None:
        if name in type(self)._oaas_fields:
            raise AttributeError(f"{type(self).__name__}.{name} is a persisted field and "
                                 f"cannot be deleted; assign a value instead")
        object.__delattr__(self, name)

    # -- commit ---------------------------------------------------------------------------
    def _oaas_needs_commit(self) -> bool:
        st = self._oaas_state
        return bool(st.dirty or st.version == 0 or st.live)

    def _oaas_prepare(self) -> WriteRecord | None:
        """Encode what changed since the last commit into a write record (None: nothing)."""
        st = self._oaas_state
        m = st.meta
        if st.deleted:
            raise ObjectNotFound(f"{m.cls_id}/{m.partition_id}/{m.object_id} was deleted")
        cls = type(self)
        if cls._oaas_mapped:
            flush_mapped(self)  # mapped bytes are durable before the commit resolves
        conv = cls._oaas_conv or cls._oaas_build_conv()
        live = st.live
        name = ""
        try:
            if live or st.version == 0:
                entries = self._oaas_encode_changed(conv)
                if entries is None:
                    self._oaas_settle()
                    return None
            else:  # only assignments since the last commit: encode exactly those
                entries = {}
                for name in st.dirty:
                    entries[name] = conv[name][1].encode(_get(self, name))
                if not entries:
                    self._oaas_settle()
                    return None
        except (TypeError, SerializationError) as e:
            raise self._oaas_encode_error(e, name) from None
        return WriteRecord((m.cls_id, m.partition_id, m.object_id), st.version,
                           entries, time_ms=_now_ms())

    def _oaas_encode_error(self, e: TypeError | SerializationError,
                           name: str = "") -> TypeError | SerializationError:
        """``e`` reworded to name the class, field and object whose value failed."""
        m = self._oaas_state.meta
        name = getattr(e, ERROR_FIELD_ATTR, name)
        return type(e)(f"{type(self).__name__}.{name} of {m.cls_id}/{m.partition_id}/"
                       f"{m.object_id}: {e}")

    def _oaas_encode_changed(self, conv: dict[str, tuple[frozenset[type], codec.FieldType,
                                                         bool, Any, type | None]]
                             ) -> dict[str, bytes] | None:
        """Entries of a new object (every field), or of assigned fields and of live
        mutable fields whose bytes changed in place. ``None`` when nothing changed."""
        fields = type(self)._oaas_fields
        st = self._oaas_state
        live = st.live
        dirty = st.dirty
        committed = st.committed
        new = st.version == 0
        entries: dict[str, bytes] = {}
        names: Any = fields if new else dirty | live
        for name in names:
            _, ft, mutable, _, _ = conv[name]
            if not mutable or name in live:
                value = _get(self, name)
            elif name in st.parked:
                value = st.parked[name]
            else:  # never read: write what is committed (or the default)
                value = self._oaas_materialize(name, fields[name])
                _set(self, name, value)
                live.add(name)
            try:
                data = ft.encode(value)
            except (TypeError, SerializationError) as e:
                setattr(e, ERROR_FIELD_ATTR, name)
                raise
            if not new and name not in dirty and committed.get(name) == data:
                continue
            entries[name] = data
        if not entries and not new:
            return None
        return entries

    def _oaas_settle(self) -> None:
        """After a commit: park mutable fields so their next read marks the object again."""
        st = self._oaas_state
        live = st.live
        rt = st.rt
        if live:  # only objects with live fields are in rt.touched
            parked = st.parked
            for n in live:
                parked[n] = _get(self, n)
                _del(self, n)  # object.__delattr__ keeps CPython's inline values (fast reads)
            live.clear()
            rt.touched.pop(id(self), None)
        rt.dirty.pop(id(self), None)

    def _oaas_apply(self, record: WriteRecord) -> tuple[int, dict[str, bytes], set[str]]:
        """Optimistically apply a submitted record; returns what :meth:`_oaas_undo` needs.

        The entry cache is not updated here: while this object is alive, loads find it in
        the identity map and never read the cache. The commit marks the key stale instead
        (``Runtime.cache_stale``: loads read through the engine), and the object's
        finalizer puts its committed state into the cache when it is dropped.
        """
        st = self._oaas_state
        committed = st.committed
        undo = (st.version, committed.copy(), st.dirty)
        committed.update(record.entries)
        version = record.expected_version + 1
        st.version = version
        st.updated_ms = record.time_ms
        st.dirty = set()
        self._oaas_settle()
        mark = st.stale
        if mark is None:
            self._oaas_mark_stale(record.key, version)
        else:
            mark[1] = version
        return undo

    def _oaas_mark_stale(self, key: ObjectKey, version: int) -> None:
        st = self._oaas_state
        rt = st.rt
        if not rt.cache_enabled:
            st.stale = UNCACHED
            return
        mark = rt.cache_stale.get(key)
        if mark is None:
            mark = rt.cache_stale[key] = [1, version]
        else:  # an older instance of this object awaits its finalizer
            mark[0] += 1
            mark[1] = max(mark[1], version)
        st.stale = mark

    def __del__(self) -> None:
        # Hand the committed state to the entry cache (see _oaas_apply). Only the newest
        # instance of an object writes it; the key stays stale until every instance with
        # commits the cache lacks is gone.
        try:
            st = _get(self, STATE_ATTR)
            mark = st.stale
            if mark is None or mark is UNCACHED:
                return
            rt = st.rt
            m = st.meta
            key = (m.cls_id, m.partition_id, m.object_id)
            try:
                if not st.deleted and st.version >= mark[1]:
                    rt.cache.put(key, StoredObject(st.version, st.created_ms,
                                                   st.updated_ms, st.committed))
            finally:
                mark[0] -= 1
                if mark[0] <= 0 and rt.cache_stale.get(key) is mark:
                    del rt.cache_stale[key]
        except Exception:  # a finalizer must not raise (e.g. at interpreter exit)
            pass

    def _oaas_undo(self, record: WriteRecord,
                   undo: tuple[int, dict[str, bytes], set[str]]) -> None:
        """A submitted commit failed: the object keeps its changes, dirty again."""
        self._oaas_undo_entries(record.key, record.new_version, record.entries, undo)

    def _oaas_undo_entries(self, key: ObjectKey, new_version: int, entries: Iterable[str],
                           undo: tuple[int, dict[str, bytes], set[str]]) -> None:
        """Undo of a commit of the fields ``entries`` (names) that failed."""
        version, old, dirty = undo
        st = self._oaas_state
        if st.version == new_version:
            st.version = version
        committed = st.committed
        for n in entries:
            b = old.get(n)
            if b is None:
                committed.pop(n, None)
            else:
                committed[n] = b
        st.dirty.update(dirty)
        st.dirty.update(entries)
        rt = st.rt
        mark = st.stale
        if mark is not None and mark is not UNCACHED:
            mark[1] = st.version
        rt.cache.discard(key)
        rt.dirty[id(self)] = self

    def commit(self) -> None:
        """Commit this object's changes and block until the commit resolves.

        With ``durability="sync"`` it returns once the write is fsynced; with ``"async"``
        once queued. Raises :class:`ConflictError` when another writer committed the object
        since it was loaded, :class:`StorageError` when the store failed, ``TypeError`` /
        :class:`SerializationError` when a value cannot be encoded; in each case the object
        keeps its changes and nothing committed is lost.
        """
        st = self._oaas_state
        rt = st.rt
        eng = rt.engine
        if (eng.commit_object is not None and not st.deleted
                and not type(self)._oaas_mapped):
            # Native engine: the one-call commit, done once queued (durability="async",
            # the memory store) or, waited for with the GIL released, once written.
            error = self._oaas_commit_queued(eng, eng.commit_object_wait)
            if error is not None:
                raise error
            return
        record = self._oaas_prepare()
        if record is None:
            return
        ticket = eng.submit(record)
        undo = self._oaas_apply(record)
        try:
            ticket.wait()
        except BaseException:
            self._oaas_undo(record, undo)
            raise

    def commit_async(self) -> Awaitable[None]:
        """Commit this object's changes; the awaitable resolves on the caller's event loop
        when the write is durable (``durability="sync"``) or queued (``"async"``).

        Errors as :meth:`commit`. Encoding happens before this returns, so later changes
        to the object are not part of this commit; except when called outside a running
        event loop with ``durability="sync"`` (``asyncio.run(obj.commit_async())``): the
        commit then runs when the loop starts the returned coroutine. What it returns is
        a coroutine as well as an awaitable: ``asyncio.run`` and ``asyncio.create_task``
        take it, as they take oaas-sdk2-py's ``async def commit_async``.
        """
        st = self._oaas_state
        eng = st.rt.engine
        if (eng.commit_object is not None and not st.deleted
                and not type(self)._oaas_mapped):
            return self._oaas_commit_native(eng)
        try:
            record = self._oaas_prepare()
        except BaseException as e:
            return _failed(e)
        if record is None:
            return _DONE
        if eng.acks_at_submit:  # memory store or durability="async": done once submitted
            try:
                ticket = eng.submit(record)
            except BaseException as e:
                return _failed(e)
            undo = self._oaas_apply(record)
            error = ticket.error
            if error is None:
                return _DONE
            self._oaas_undo(record, undo)
            return _failed(error)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet: commit once one runs this
            return self._oaas_commit_in_loop()
        undo = self._oaas_apply(record)
        try:
            # On failure the engine runs the undo on this loop before the future's
            # waiters resume (cheaper than a done-callback per commit).
            return eng.submit_future(record, loop, lambda: self._oaas_undo(record, undo))
        except BaseException as e:
            self._oaas_undo(record, undo)
            return _failed(e)

    def _oaas_commit_native(self, eng: Any) -> Awaitable[None]:
        """``commit_async`` on the native engine: one call encodes the assigned fields and
        the live mutable fields changed in place (every field of a new object), queues
        the commit and applies and settles it on the object (``NativeEngine.commit_object``,
        the work of ``_oaas_prepare``, ``submit`` and ``_oaas_apply``); a durable commit's
        future is made, and resolved, by the engine (``NativeEngine.commit_object_future``),
        which also runs ``_oaas_undo_entries`` when the commit fails."""
        if eng.acks_at_submit:  # durability="async": acknowledged once queued
            error = self._oaas_commit_queued(eng)
            return _DONE if error is None else _failed(error)
        st = self._oaas_state
        if not st.dirty and not st.live and st.version:
            st.rt.dirty.pop(id(self), None)
            return _DONE
        encoders = type(self)._oaas_encoders or type(self)._oaas_build_encoders()
        fresh = st.stale is None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet: commit once one runs this
            return self._oaas_commit_in_loop()
        try:
            fut = eng.commit_object_future(self, encoders, loop)
        except (TypeError, SerializationError) as e:
            return _failed(self._oaas_encode_error(e))
        except BaseException as e:
            return _failed(e)
        if fresh:
            self._oaas_mark_stale(self._oaas_key(), st.version)
        return _DONE if fut is None else fut

    def _oaas_commit_queued(self, eng: Any, call: Any = None) -> BaseException | None:
        """The one-call commit of :meth:`_oaas_commit_native` on an engine that
        acknowledges at submit (``durability="async"``, the memory store): done once
        queued; with ``call=eng.commit_object_wait`` (blocking ``commit()``), once written
        whatever the durability. Returns the error (the object then keeps its changes),
        else ``None``."""
        st = self._oaas_state
        if not st.dirty and not st.live and st.version:
            st.rt.dirty.pop(id(self), None)
            return None
        encoders = type(self)._oaas_encoders or type(self)._oaas_build_encoders()
        fresh = st.stale is None
        try:
            (call or eng.commit_object)(self, encoders)
        except (TypeError, SerializationError) as e:
            return self._oaas_encode_error(e)
        except BaseException as e:
            return e
        if fresh:
            self._oaas_mark_stale(self._oaas_key(), st.version)
        return None

    async def _oaas_commit_in_loop(self) -> None:
        """``commit_async`` called outside a running loop: the commit, once a loop runs
        this coroutine."""
        await self.commit_async()

    def _oaas_key(self) -> ObjectKey:
        m = self._oaas_state.meta
        return (m.cls_id, m.partition_id, m.object_id)

    def refresh(self) -> None:
        """Drop uncommitted changes and reload the committed state from the store.

        Use after a :class:`ConflictError` to see the other writer's state. Raises
        :class:`ObjectNotFound` when the object no longer exists.
        """
        st = self._oaas_state
        rt = st.rt
        m = st.meta
        key = (m.cls_id, m.partition_id, m.object_id)
        rt.cache.discard(key)
        stored = rt.engine.read(key)
        if stored is None:
            raise ObjectNotFound(f"{m.cls_id}/{m.partition_id}/{m.object_id} not found")
        undo = st.undo
        if undo is not None:
            # In a native method call: log the values replaced below, so that a rollback
            # undoes the refresh too (the Python call snapshots them; model/calls.py).
            d = self.__dict__
            for name, f in type(self)._oaas_fields.items():
                if not f.mutable and name not in undo and name in d:
                    undo[name] = d[name]
        self._oaas_apply_stored(stored)  # raises before changing anything
        for n in st.live:
            _del(self, n)
        st.live.clear()
        st.parked.clear()
        st.dirty.clear()
        rt.dirty.pop(id(self), None)
        rt.touched.pop(id(self), None)

    # -- delete ---------------------------------------------------------------------------
    def _oaas_delete_record(self) -> WriteRecord | None:
        st = self._oaas_state
        m = st.meta
        key = (m.cls_id, m.partition_id, m.object_id)
        rt = st.rt
        st.deleted = True
        rt.dirty.pop(id(self), None)
        rt.touched.pop(id(self), None)
        if rt.identity.get(key) is self:
            del rt.identity[key]
        rt.cache.discard(key)
        if st.version == 0:
            return None
        return WriteRecord(key, st.version, delete_object=True, time_ms=_now_ms())

    def delete(self) -> None:
        """Delete this object from the store (blocking). Later loads raise ObjectNotFound."""
        record = self._oaas_delete_record()
        if record is not None:
            self._oaas_state.rt.engine.submit(record).wait()

    async def delete_async(self) -> None:
        """Delete this object from the store; resolves as :meth:`commit_async` does."""
        record = self._oaas_delete_record()
        if record is None:
            return
        eng = self._oaas_state.rt.engine
        if eng.acks_at_submit:
            error = eng.submit(record).error
            if error is not None:
                raise error
            return
        await eng.submit_future(record, asyncio.get_running_loop())


class _Resolved:
    """An awaitable resolved already: ``None``, or raising ``error`` (cheaper than a
    Future for the common no-op commit and for errors found before anything is queued).

    Also a coroutine (``send`` / ``throw`` / ``close``), as every awaitable
    ``commit_async`` returns is: ``asyncio.run(obj.commit_async())`` and
    ``asyncio.create_task(obj.commit_async())`` take it, as they take oaas-sdk2-py's
    ``async def commit_async``.
    """

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def __await__(self) -> Any:
        if self.error is not None:
            raise self.error
        return None
        yield  # pragma: no cover - makes this a generator

    def send(self, value: Any) -> Any:
        if self.error is not None:
            raise self.error
        raise StopIteration

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise thrown(typ, val)

    def close(self) -> None:
        pass


class _Done(_Resolved):
    """The ``_Resolved`` of a commit done at once (``None``), the common case: its
    ``await`` runs no Python frame (``__await__`` is an empty tuple's ``__iter__``, a C
    function whose iterator is exhausted at once), about half what ``_Resolved``'s
    generator costs."""

    __slots__ = ()
    if not typing.TYPE_CHECKING:  # typed as the inherited __await__
        __await__ = staticmethod(().__iter__)


_DONE = _Done()


def _failed(e: BaseException) -> Awaitable[None]:
    return _Resolved(e)


# The Python __setattr__ and commit_async (the reference; pure-Python implementation). The
# seam (oaas_sdk/_backend.py) installs them, or the native ones, which find the Python
# commit_async and the awaitables it returns on the class.
_PY_SETATTR = OaasObject.__dict__["__setattr__"]
_PY_COMMIT_ASYNC = OaasObject.__dict__["commit_async"]
_PY_COMMIT = OaasObject.__dict__["commit"]
# The finalizer: the native implementation stores a slot wrapper of its own (a C
# `tp_finalize`, no Python frame per deallocation; oprc-py/src/object/finalize.rs).
_PY_DEL = OaasObject.__dict__["__del__"]
# The Python create (a classmethod): the native one (Lifecycle.create_entry) calls its
# function for every case it does not take.
_PY_CREATE = OaasObject.__dict__["create"]
OaasObject._oaas_py_commit_async = _PY_COMMIT_ASYNC
OaasObject._oaas_py_commit = _PY_COMMIT
OaasObject._oaas_done = _DONE
OaasObject._oaas_failed = staticmethod(_failed)
