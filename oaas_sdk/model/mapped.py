"""Memory-mapped fields: large binary or numpy state that lives in a file of the store.

Declare one with :func:`mapped`::

    from oaas_sdk import Mapped, mapped

    class Camera(OaasObject):
        frame: Mapped = mapped(shape=(1080, 1920, 3), dtype="uint8")   # numpy array
        blob: Mapped = mapped(size=1 << 20)                             # memoryview

Reading the attribute gives a writable, zero-copy view of the field's file (a numpy array
when ``dtype``/``shape`` are given and numpy is installed, else a ``memoryview``); writes
through the view change the file's pages directly. ``obj.commit()`` / ``commit_async()``
flushes (msync) the mapped fields the object opened before its other entries are handed to
the engine, so when the commit resolves the mapped bytes are on disk too. Layout:
``docs/format.md``, "Mapped fields"; API: ``docs/mapped.md``.

Two implementations of the mapping, same files: the native ``oaas_sdk._native.MappedFile``
(memmap2, msync with the GIL released) and :class:`PyMappedFile` (the ``mmap`` module).
With the memory store the mapping is anonymous (nothing persisted).
"""

from __future__ import annotations

import math
import mmap
import os
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from ..stores import lmdb_location, object_key_bytes, parse_storage_url

if TYPE_CHECKING:
    from .object import OaasObject

__all__ = ["Mapped", "MappedField", "mapped", "PyMappedFile", "mapped_path", "flush_mapped"]


class MappedUndo:
    """A mapped field's bytes before a method call first reached the field: an entry of the
    call's undo log (``ObjectState.undo``, field name -> entry). Assigning it to the field
    (what a rollback does) copies the bytes back into the mapping."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Mapped:
    """Annotation of a memory-mapped field (``frame: Mapped = mapped(...)``)."""


class PyMappedFile:
    """The pure-Python mapping: a file of exactly ``size`` bytes mapped shared, writable.

    Created with ``size`` zero bytes when missing; an existing file of another size is
    refused with ``ValueError``; ``path=None`` maps anonymous memory. Supports the buffer
    protocol through :meth:`view`. Raises :class:`StorageError` when the file cannot be
    created or mapped.
    """

    def __init__(self, path: str | None, size: int) -> None:
        self.size = size
        if path is None:
            self._mm = mmap.mmap(-1, max(size, 1))
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"{path}: cannot open: {e}") from e
        try:
            have = os.fstat(fd).st_size
            if have == 0 and size > 0:
                os.ftruncate(fd, size)
                os.fsync(fd)
            elif have != size:
                raise ValueError(f"{path}: the file holds {have} bytes but the field "
                                 f"declares {size}")
            self._mm = mmap.mmap(fd, size) if size else mmap.mmap(-1, 1)
        except OSError as e:
            raise StorageError(f"{path}: cannot map: {e}") from e
        finally:
            os.close(fd)

    def view(self) -> memoryview:
        return memoryview(self._mm)[: self.size]

    def flush(self) -> None:
        """msync the mapping (returns once the pages are on disk)."""
        self._mm.flush()

    def __len__(self) -> int:
        return self.size


class MappedField:
    """Class attribute behind a mapped field; made by :func:`mapped`."""

    __slots__ = ("name", "size", "shape", "dtype")

    def __init__(self, size: int, shape: tuple[int, ...] | None, dtype: str | None) -> None:
        self.name = ""
        self.size = size
        self.shape = shape
        self.dtype = dtype

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: OaasObject | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        st = obj._oaas_state
        maps = st.maps
        if maps is None:
            maps = st.maps = {}
        entry = maps.get(self.name)
        if entry is None:
            handle = _open(obj, self)
            entry = maps[self.name] = (handle, self._view(handle))
        undo = st.undo
        if undo is not None and self.name not in undo:
            # A method call runs: keep the bytes before its first access, for a rollback
            # (one copy of the field per call that reaches it; see docs/mapped.md).
            undo[self.name] = MappedUndo(bytes(_raw(entry[0])))
        return entry[1]

    def __set__(self, obj: OaasObject, value: Any) -> None:
        """Copy ``value`` (any bytes-like of exactly the field's size) into the mapping."""
        restore = type(value) is MappedUndo  # a rollback, not a change of the running call
        src = memoryview(value.data if restore else value).cast("B")
        if src.nbytes != self.size:
            raise ValueError(f"{type(obj).__name__}.{self.name}: expected {self.size} bytes, "
                             f"got {src.nbytes}")
        if not restore:
            self.__get__(obj)
        _raw(_maps(obj)[self.name][0])[:] = src

    def _view(self, handle: Any) -> Any:
        raw = handle.view() if isinstance(handle, PyMappedFile) else memoryview(handle)
        if self.dtype is None:
            return raw
        try:
            import numpy as np
        except ImportError:
            return raw
        arr = np.frombuffer(raw, dtype=self.dtype)
        return arr.reshape(self.shape) if self.shape is not None else arr


def mapped(size: int | None = None, *, shape: tuple[int, ...] | int | None = None,
           dtype: str | None = None) -> Any:
    """Declare a memory-mapped field.

    Give ``size`` in bytes (the view is a ``memoryview``), or ``shape`` and ``dtype`` (a
    numpy dtype string such as ``"float32"`` or ``"<u2"``; the view is a C-ordered numpy
    array, or a ``memoryview`` of its bytes without numpy). The size is fixed: the file
    is created with it and a file of another size is refused with ``ValueError``.
    """
    shp = (shape,) if isinstance(shape, int) else shape
    if size is None:
        if shp is None or dtype is None:
            raise TypeError("mapped(): give size=<bytes>, or shape=... and dtype=...")
        try:
            import numpy as np

            itemsize = np.dtype(dtype).itemsize
        except ImportError:
            itemsize = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "f": 4, "d": 8,
                        "q": 8, "Q": 8}.get(dtype.lstrip("<>=|")[:1], 1)
        size = math.prod(shp) * itemsize
    if size < 0:
        raise ValueError("mapped(): size must be >= 0")
    return MappedField(size, shp, dtype)


def mapped_path(obj: OaasObject, name: str) -> str | None:
    """File of field ``name`` of ``obj``: ``<store dir>/mapped/<object key hex>/<name>``,
    or ``None`` with the memory store."""
    rt = obj._oaas_state.rt
    kind, loc = parse_storage_url(rt.store_url)
    if kind != "lmdb":
        return None
    directory, _ = lmdb_location(loc)
    m = obj._oaas_state.meta
    okey = object_key_bytes((m.cls_id, m.partition_id, m.object_id))
    return os.path.join(directory, "mapped", okey.hex(), name)


def _open(obj: OaasObject, f: MappedField) -> Any:
    return obj._oaas_state.rt.backend.mapped_file(mapped_path(obj, f.name), f.size)


def _raw(handle: Any) -> memoryview:
    """The bytes of a mapping (a writable ``memoryview``, format ``"B"``)."""
    if isinstance(handle, PyMappedFile):
        return handle.view()
    return memoryview(handle).cast("B")


def _maps(obj: OaasObject) -> dict[str, tuple[Any, Any]]:
    """The object's open mapped fields: name -> (file handle, view), kept in its
    :class:`~oaas_sdk.model.state.ObjectState` (``maps``)."""
    st = obj._oaas_state
    maps = st.maps
    if maps is None:
        maps = st.maps = {}
    return maps


def flush_mapped(obj: OaasObject) -> None:
    """msync every mapped field ``obj`` has opened (part of a commit)."""
    for handle, _ in _maps(obj).values():
        handle.flush()
