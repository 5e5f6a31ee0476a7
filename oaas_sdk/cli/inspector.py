"""Read-only access to a store for ``python -m oaas_sdk``: classes, objects, decoded fields.

Everything goes through the :class:`~oaas_sdk.stores.Store` protocol (``classes``,
``scan``, ``read``), so every store kind works the same. Nothing is ever written: LMDB
stores are opened read-only (a service may have the store open meanwhile).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import codec
from ..errors import ConfigError, SerializationError, StorageError
from ..stores import ObjectKey, Store, StoredObject, open_store, parse_storage_url

T = TypeVar("T")

__all__ = ["Inspector", "DecodedObject", "Corrupt", "parse_object_id", "iso_ms"]


def parse_object_id(text: str) -> int | str:
    """An object id as typed on the command line: digits are a numeric id (u64), anything
    else a string id."""
    return int(text) if text.isdigit() else text


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as an ISO 8601 UTC time, e.g. ``2026-12-03T08:00:00.123Z``."""
    try:
        t = _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Corrupt:
    """An entry (or an object's metadata, ``field=None``) that does not decode."""

    key: ObjectKey
    field: str | None
    error: str

    def __str__(self) -> str:
        cls_id, pid, oid = self.key
        where = f"field {self.field!r}" if self.field is not None else "metadata"
        return f"{cls_id}/{pid}/{oid} {where}: {self.error}"


@dataclass
class DecodedObject:
    """One stored object with its fields decoded into plain JSON-able values."""

    key: ObjectKey
    version: int
    created_ms: int
    updated_ms: int
    fields: dict[str, Any]
    corrupt: list[Corrupt] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``{"cls_id", "partition_id", "object_id", "version", "created", "updated",
        "fields"}``; a corrupt field's value is ``{"$corrupt": "<why>"}``."""
        cls_id, pid, oid = self.key
        return {"cls_id": cls_id, "partition_id": pid, "object_id": oid,
                "version": self.version, "created": iso_ms(self.created_ms),
                "updated": iso_ms(self.updated_ms), "fields": self.fields}


class Inspector:
    """A store opened read-only, with the decoding the inspector's commands need.

    ``storage``: a storage string as ``OaasConfig.storage`` (``lmdb:<dir>``, ``memory``,
    Redis URLs where available). ``app``: a module to import first; the classes it
    registers decode their fields with their type hints, every other class schema-less.
    Raises :class:`ConfigError` for a storage string not understood or an ``app`` that
    does not import, :class:`StorageError` when the store cannot be opened.
    """

    def __init__(self, storage: str, app: str | None = None) -> None:
        parse_storage_url(storage)  # ConfigError for a bad string, before anything else
        self.app_classes: dict[str, Any] = {}
        if app is not None:
            self.app_classes = _import_app(app)
        self.storage = storage
        self.store: Store = open_store(storage, sync=False, readonly=True)

    @property
    def name(self) -> str:
        return self.store.name

    def close(self) -> None:
        self.store.close()

    def classes(self) -> list[str]:
        """Sorted class ids with stored objects. :class:`StorageError` when the store fails
        (as for every method here)."""
        return self._guard(self.store.classes)

    def keys(self, cls_id: str) -> list[ObjectKey]:
        """Identities of the stored objects of ``cls_id``, sorted by partition, then id."""
        return self._guard(lambda: sorted(self.store.scan(cls_id), key=_key_order))

    def read(self, key: ObjectKey) -> StoredObject | None:
        return self._guard(lambda: self.store.read(key))

    def _guard(self, fn: Callable[[], T]) -> T:
        """``fn()``, with a failure of the store's library as :class:`StorageError`."""
        try:
            return fn()
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"{self.name}: read failed: {type(e).__name__}: {e}") from e

    def decode(self, key: ObjectKey, stored: StoredObject) -> DecodedObject:
        """Decode every entry of ``stored``: with the ``app`` class's hint when the class
        and field are known (references stay references: nothing is loaded), else
        schema-less. Corrupt entries are listed, their value ``{"$corrupt": why}``."""
        cls = self.app_classes.get(key[0])
        infos = getattr(cls, "_oaas_fields", {}) if cls is not None else {}
        out = DecodedObject(key, stored.version, stored.created_ms, stored.updated_ms, {})
        for name in sorted(stored.entries):
            data = stored.entries[name]
            try:
                out.fields[name] = _decode_entry(infos.get(name), data)
            except (SerializationError, TypeError, ValueError) as e:
                out.corrupt.append(Corrupt(key, name, str(e)))
                out.fields[name] = {"$corrupt": str(e)}
        return out

    def walk(self) -> Iterator[tuple[ObjectKey, DecodedObject | Corrupt]]:
        """Every stored object, decoded (or the :class:`Corrupt` of its metadata)."""
        for cls_id in self.classes():
            for key in self.keys(cls_id):
                try:
                    stored = self.read(key)
                except StorageError as e:
                    yield key, Corrupt(key, None, str(e))
                    continue
                if stored is not None:  # deleted meanwhile
                    yield key, self.decode(key, stored)


def _key_order(key: ObjectKey) -> tuple[int, int, int | str]:
    _, pid, oid = key
    return (pid, 0, oid) if isinstance(oid, int) else (pid, 1, oid)


def _decode_entry(info: Any, data: bytes) -> Any:
    if info is None:
        return codec.decode_plain(data)
    from ..model.fields import _has_reference

    ft = info.ftype
    if _has_reference(ft.hint):
        # Decoding a reference with its hint would load the object it names (through a
        # runtime, which may open the store for writing): show it schema-less instead.
        return codec.decode_plain(data)
    return codec.to_plain(ft.decode(data))


def _import_app(module: str) -> dict[str, Any]:
    """Import ``module`` (from the current directory too, as ``python -m`` would) and
    return the OaaS classes by ``cls_id``: those registered with ``@oaas.service``, and
    the other subclasses of ``OaasObject`` (under their default ``cls_id``)."""
    from ..model.object import OaasObject, registered_classes

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        importlib.import_module(module)
    except Exception as e:
        raise ConfigError(f"--app {module}: cannot import it: {type(e).__name__}: {e}") from e
    found = registered_classes()
    todo = list(OaasObject.__subclasses__())
    while todo:
        cls = todo.pop()
        found.setdefault(cls._oaas_cls_id, cls)
        todo.extend(cls.__subclasses__())
    return found
