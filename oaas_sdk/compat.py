"""Names that code written for oaas-sdk2-py 0.3.6 imports and that have no role of their own
in oaas-sdk's design: the per-object :class:`Session` (``obj.session``), the standalone
:class:`StateDescriptor`, the debug switches (:class:`DebugLevel`, :func:`configure_debug`,
:func:`set_debug_level`, :func:`get_debug_context`), which map onto the standard
``logging`` logger ``oaas_sdk``, and the module-level conveniences (:func:`create_object`,
:func:`load_object`, :func:`configure_oaas`, :func:`enable_auto_commit`,
:func:`disable_auto_commit`). Each is importable from ``oaas_sdk``.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast, overload

from . import codec
from .errors import SerializationError, ValidationError

if TYPE_CHECKING:
    from .config import OaasConfig
    from .model.object import OaasObject
    from .runtime import Runtime

__all__ = ["Session", "StateDescriptor", "DebugLevel", "DebugContext", "configure_debug",
           "set_debug_level", "get_debug_context", "create_object", "load_object",
           "configure_oaas", "enable_auto_commit", "disable_auto_commit"]

T = TypeVar("T")
Obj = TypeVar("Obj", bound="OaasObject")

log = logging.getLogger("oaas_sdk")


# -- sessions -----------------------------------------------------------------------------

class Session:
    """What ``obj.session`` gives: oaas-sdk2-py code commits through it
    (``await obj.session.commit_async()``).

    oaas-sdk has no sessions: every object of a configuration shares one runtime, whose
    commit costs follow the changed objects. ``commit``/``commit_async`` therefore commit
    every object of that runtime with uncommitted changes, as ``oaas.commit_all()`` does
    (an oaas-sdk2-py session also committed all its objects). Deletes need no commit here:
    ``obj.delete()`` has already removed the object when it returns.
    """

    __slots__ = ("_rt",)

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def _check(self) -> None:
        from .runtime import current

        if current() is not self._rt:
            from .errors import ConfigError

            raise ConfigError("this session's configuration was replaced by "
                              "oaas.configure(); load the objects again")

    def commit(self) -> None:
        """Commit every object with uncommitted changes and block until durable.

        Raises the first commit error after trying every object (``ConflictError``,
        ``StorageError``, ...); ``ConfigError`` when ``oaas.configure()`` replaced this
        session's configuration since.
        """
        from .service import oaas

        self._check()
        oaas.commit_all()

    async def commit_async(self) -> None:
        """Commit every object with uncommitted changes; resolves when all are durable.

        Errors as :meth:`commit`.
        """
        from .service import oaas

        self._check()
        await oaas.commit_all_async()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and other._rt is self._rt

    def __hash__(self) -> int:
        return id(self._rt)

    def __repr__(self) -> str:
        cfg = self._rt.config
        return f"<Session of {'mock' if cfg.mock_mode else cfg.storage}>"


# -- StateDescriptor ----------------------------------------------------------------------

class _IndexedData(Protocol):
    """An object that keeps encoded state by index, as oaas-sdk2-py's ``BaseObject`` did."""

    def get_data(self, index: int) -> bytes | None: ...

    def set_data(self, index: int, data: bytes) -> None: ...


_CALLED = (int, float, str, bool)


class StateDescriptor(Generic[T]):
    """oaas-sdk2-py's descriptor of one typed field kept as bytes by an object's
    ``get_data(index)`` / ``set_data(index, data)``.

    oaas-sdk's own fields do not use it (``OaasObject`` fields are plain attributes, see
    the guide); it exists for code that builds its own objects on it. Values are encoded
    with oaas-sdk's codec for ``type_hint`` (``docs/format.md``), not with oaas-sdk2-py's
    JSON, and never pickled.

    Args:
        name: the field name; the decoded value is cached on the object as
            ``private_name`` (``"_state_<name>"``).
        type_hint: the field's type (any type oaas-sdk fields support).
        default_value: what a read returns while ``get_data(index)`` gives ``None``.
        index: the slot passed to ``get_data``/``set_data``.

    Raises ``TypeError`` when ``type_hint`` is not a supported field type.
    """

    def __init__(self, name: str, type_hint: type[T] | Any, default_value: T | None,
                 index: int) -> None:
        self.name = name
        self.type_hint = type_hint
        self.default_value = default_value
        self.index = index
        self.private_name = f"_state_{name}"
        self._ftype = codec.field_type(type_hint)

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> StateDescriptor[T]: ...
    @overload
    def __get__(self, obj: _IndexedData, objtype: type | None = None) -> T: ...
    def __get__(self, obj: _IndexedData | None, objtype: type | None = None) -> Any:
        """The field's value: cached on ``obj``, else decoded from ``obj.get_data(index)``,
        else ``default_value``. Raises :class:`SerializationError` when the stored bytes
        cannot be decoded as ``type_hint``."""
        if obj is None:
            return self
        try:
            return getattr(obj, self.private_name)
        except AttributeError:
            pass
        data = obj.get_data(self.index)
        value = self.default_value if data is None else self._deserialize(data)
        setattr(obj, self.private_name, value)
        return value

    def __set__(self, obj: _IndexedData, value: Any) -> None:
        """Convert ``value`` (see :meth:`_convert_value`), encode it and hand the bytes to
        ``obj.set_data(index, data)``. Raises :class:`ValidationError` when the value
        cannot be converted, ``TypeError``/:class:`SerializationError` when it cannot be
        encoded; the object is then left unchanged."""
        converted = self._convert_value(value)
        data = self._serialize(converted)
        obj.set_data(self.index, data)
        setattr(obj, self.private_name, converted)

    def _serialize(self, value: Any) -> bytes:
        """``value`` encoded as ``type_hint`` (bytes). Raises ``TypeError`` or
        :class:`SerializationError` when it cannot be encoded."""
        return self._ftype.encode(value)

    def _deserialize(self, data: bytes) -> T:
        """``data`` decoded as ``type_hint``. Raises :class:`SerializationError` naming the
        field when the bytes are not a valid encoding."""
        try:
            return cast(T, self._ftype.decode(data))
        except SerializationError as e:
            raise SerializationError(f"state field {self.name!r}: {e}") from None

    def _convert_value(self, value: Any) -> T:
        """``value`` converted to ``type_hint``: for ``int``, ``float``, ``str`` and
        ``bool`` by calling the type, as oaas-sdk2-py did (``42.5`` -> ``42``,
        ``"42"`` -> ``42``); for other types as a field assignment converts (pydantic's lax
        mode). ``None`` stays ``None``. Raises :class:`ValidationError` naming the field."""
        hint: Any = self.type_hint
        if value is None or type(value) is hint:
            return cast(T, value)
        if hint in _CALLED:
            try:
                return cast(T, hint(value))
            except (TypeError, ValueError) as e:
                raise ValidationError(f"state field {self.name!r}: cannot convert "
                                      f"{type(value).__name__} to {hint.__name__}: {e}") from e
        try:
            return cast(T, self._ftype.coerce(value, owner="StateDescriptor", field=self.name))
        except TypeError as e:
            raise ValidationError(str(e)) from e


# -- debugging ----------------------------------------------------------------------------

class DebugLevel(enum.Enum):
    """oaas-sdk2-py's debug levels, each mapped to a ``logging`` level of the ``oaas_sdk``
    logger: ``NONE`` (logger disabled), ``ERROR``, ``WARNING``, ``INFO``, ``DEBUG``,
    ``TRACE`` (= ``logging.DEBUG``)."""

    NONE = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    DEBUG = 4
    TRACE = 5

    @property
    def logging_level(self) -> int:
        """The ``logging`` level this maps to (``NONE``: above ``CRITICAL``)."""
        return _LOGGING_LEVELS[self]


_LOGGING_LEVELS = {
    DebugLevel.NONE: logging.CRITICAL + 1,
    DebugLevel.ERROR: logging.ERROR,
    DebugLevel.WARNING: logging.WARNING,
    DebugLevel.INFO: logging.INFO,
    DebugLevel.DEBUG: logging.DEBUG,
    DebugLevel.TRACE: logging.DEBUG,
}


@dataclass
class DebugContext:
    """The debug switches last set by :func:`configure_debug` / :func:`set_debug_level`.

    ``level`` is applied to the ``oaas_sdk`` logger; the ``trace_*`` and
    ``performance_monitoring`` flags are recorded for oaas-sdk2-py compatibility (oaas-sdk's
    own measurements are in ``oaas.stats()``)."""

    level: DebugLevel = DebugLevel.INFO
    enabled: bool = True
    trace_calls: bool = False
    trace_serialization: bool = False
    trace_session_operations: bool = False
    performance_monitoring: bool = False
    logger: logging.Logger = field(default=log, repr=False)

    def log(self, level: DebugLevel, message: str) -> None:
        """Log ``message`` on the ``oaas_sdk`` logger at ``level``'s logging level, when
        debugging is enabled and ``level`` is not above the configured one."""
        if self.enabled and level is not DebugLevel.NONE and level.value <= self.level.value:
            self.logger.log(level.logging_level, message)


_context = DebugContext()


def get_debug_context() -> DebugContext:
    """The process-wide :class:`DebugContext`."""
    return _context


def set_debug_level(level: DebugLevel) -> None:
    """Set the ``oaas_sdk`` logger to ``level`` (``DebugLevel.NONE`` disables it).
    Raises ``TypeError`` when ``level`` is not a :class:`DebugLevel`."""
    if not isinstance(level, DebugLevel):
        raise TypeError(f"level must be a DebugLevel, not {level!r}")
    _context.level = level
    _context.enabled = level is not DebugLevel.NONE
    log.setLevel(level.logging_level)
    log.disabled = not _context.enabled


def configure_debug(level: DebugLevel = DebugLevel.INFO, trace_calls: bool = False,
                    trace_serialization: bool = False, trace_session_operations: bool = False,
                    performance_monitoring: bool = False) -> None:
    """oaas-sdk2-py's debug configuration: sets the ``oaas_sdk`` logger's level (see
    :class:`DebugLevel`) and records the flags on :func:`get_debug_context`. Attaches no
    handler: where log records go is the application's ``logging`` setup. Raises
    ``TypeError`` when ``level`` is not a :class:`DebugLevel`."""
    set_debug_level(level)
    _context.trace_calls = trace_calls
    _context.trace_serialization = trace_serialization
    _context.trace_session_operations = trace_session_operations
    _context.performance_monitoring = performance_monitoring



# -- module-level conveniences ------------------------------------------------------------

def create_object(cls: type[Obj], obj_id: int | str | None = None, local: bool = False) -> Obj:
    """``cls.create(obj_id, local=local)`` (see :meth:`OaasObject.create`, errors included)."""
    return cls.create(obj_id, local=local)


def load_object(cls: type[Obj], obj_id: int | str) -> Obj:
    """``cls.load(obj_id)`` (see :meth:`OaasObject.load`; ``ObjectNotFound`` when absent)."""
    return cls.load(obj_id)


def configure_oaas(config: OaasConfig) -> None:
    """``oaas.configure(config)``."""
    from .service import oaas

    oaas.configure(config)


def enable_auto_commit() -> None:
    """Turn ``auto_commit`` on in the active configuration: from the next call on, a
    method that changed state commits after it."""
    from .runtime import current

    current().config.auto_commit = True


def disable_auto_commit() -> None:
    """Turn ``auto_commit`` off in the active configuration: changes wait for an explicit
    commit (``obj.commit_async()``, ``oaas.commit_all_async()``)."""
    from .runtime import current

    current().config.auto_commit = False
