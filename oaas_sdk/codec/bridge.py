"""The bridge to the native codec (``oaas_sdk._native.Codec``): choosing the backend.

:func:`set_backend` is the one switch between the implementations. It builds the native
codec once per extension module, handing it the Python types and helpers it calls back
(:func:`_native_helpers`), installs the native ``FieldType.encode``/``decode`` methods
(once), marks the chosen codec active and records it in
:data:`~oaas_sdk.codec._active.ACTIVE`, which every Python encode/decode path reads.
Both backends write the bytes of ``docs/format.md`` and raise the same errors.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import uuid
from collections.abc import Callable
from typing import Any

from oaas_sdk.errors import SerializationError

from ._active import ACTIVE
from ._fallback import _dec_decimal, _ExtType, _prep_any, _tz
from ._values import _ANY_LEAF, _corrupt, _Mismatch, _RawRef, _TooDeep
from .format import _NP_KINDS, _bigint_bytes, _decimal_str, _ndarray_dtype_str
from .plan import FieldType

__all__ = ["backend", "set_backend", "set_default_ref_factory"]

_np_dtypes: dict[str, Any] = {}


def _native_ndarray(dstr: str, shape: tuple[int, ...], data: Any, itemsize: int) -> Any:
    """Ext 11 value from a header the native decoder checked; ``data`` is a bytearray
    (writable copy), a memoryview (zero-copy view) or None (no elements)."""
    try:
        import numpy as np
    except ImportError:
        raise _corrupt("ext 11 (numpy.ndarray) needs numpy, which is not installed") from None
    _ANY_LEAF.add(np.ndarray)
    dt = _np_dtypes.get(dstr)
    if dt is None:
        try:
            dt = np.dtype(dstr)
        except Exception:
            raise _corrupt(f"ext 11 (numpy.ndarray) dtype {dstr!r} is not valid") from None
        if dt.str != dstr or dt.kind not in _NP_KINDS or dt.itemsize == 0:
            raise _corrupt(f"ext 11 (numpy.ndarray) dtype {dstr!r} is not allowed")
        if len(_np_dtypes) < 256:
            _np_dtypes[dstr] = dt
    if dt.itemsize != itemsize:
        raise _corrupt(f"ext 11 (numpy.ndarray) dtype {dstr!r} is not allowed")
    if data is None:
        return np.empty(shape, dt)
    return np.frombuffer(data, dtype=dt).reshape(shape)


def _int_from_be(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def _native_helpers() -> dict[str, Any]:
    return {
        "datetime": _dt.datetime,
        "date": _dt.date,
        "time": _dt.time,
        "timedelta": _dt.timedelta,
        "UUID": uuid.UUID,
        "Decimal": decimal.Decimal,
        "ExtType": _ExtType,
        "SerializationError": SerializationError,
        "TooDeep": _TooDeep,
        "Mismatch": _Mismatch,
        "prep_any": _prep_any,
        "bigint_bytes": _bigint_bytes,
        "decimal_str": _decimal_str,
        "dtype_str": _ndarray_dtype_str,
        "tz": _tz,
        "dec_decimal": _dec_decimal,
        "make_ndarray": _native_ndarray,
        "raw_ref": _RawRef,
        "int_from_bytes": _int_from_be,
    }


_codecs: dict[int, Any] = {}


def set_backend(native: Any) -> None:
    """Choose the implementation every :class:`FieldType` uses from now on.

    ``native``: the extension module ``oaas_sdk._native`` (bytes are made by its
    ``Codec``), or ``None`` for the pure-Python codec. Both write identical bytes
    (docs/format.md) and raise the same error types. Called by ``Runtime.__init__`` for
    ``native="auto"|"on"|"off"``; switching is safe at any time between calls.
    """
    nc = None
    if native is not None:
        nc = _codecs.get(id(native))
        if nc is None:
            nc = _codecs[id(native)] = native.Codec(_native_helpers())
            nc.set_ref_factory(ACTIVE.ref_factory)
            # Once per process: FieldType.encode/decode become the native methods, which
            # use the type's native coder while its codec is active and otherwise call
            # FieldType._encode_slow/_decode_slow (the Python path).
            native.Coder.install(FieldType, FieldType.__dict__["_ncoder"])
    for c in _codecs.values():
        c.set_active(c is nc)
    ACTIVE.native = nc


def backend() -> str:
    """``"native"`` or ``"python"``: the implementation encode/decode use now."""
    return "native" if ACTIVE.native is not None else "python"


def set_default_ref_factory(fn: Callable[[str, int, int | str], Any]) -> None:
    """Set how a reference (ext 12) decodes where the hint does not say.

    ``fn(cls_id, partition_id, object_id)`` is called for references decoded under an
    ``Any`` hint (or a hint without ``__oaas_from_identity__``); until this is called they
    decode to the tuple ``(cls_id, partition_id, object_id)``. Raises ``TypeError`` if
    ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"ref factory must be callable, got {type(fn).__name__!r}")
    ACTIVE.ref_factory = fn
    for nc in _codecs.values():
        nc.set_ref_factory(fn)
