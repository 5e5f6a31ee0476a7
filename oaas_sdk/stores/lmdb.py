"""The embedded default store: an LMDB environment, through the ``lmdb`` package.

Layout (``docs/format.md``, "Store layout"): named database ``meta`` holds one 25-byte
metadata record per object under the object's key; named database ``entries`` holds one
entry per field under ``object key + 0x00 + field name``. A batch of commits is one write
transaction, so one fsync covers it (group commit). LMDB: http://www.lmdb.tech/doc/
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any, cast

import lmdb

from ..errors import StorageError
from .layout import (
    ENTRIES_DB,
    FIRST_OBJECT_KEY,
    FORMAT_KEY,
    FORMAT_VALUE,
    META_DB,
    after_class_bytes,
    class_id_bytes,
    class_prefix_bytes,
    entries_prefix_bytes,
    entry_key_bytes,
    object_key_bytes,
    pack_meta,
    parse_object_key_bytes,
    unpack_meta,
)
from .records import ObjectKey, StoredObject, WriteRecord, conflict

__all__ = [
    "LmdbStore",
    "FORMAT_KEY",
    "FORMAT_VALUE",
    "DEFAULT_MAP_SIZE",
    "ENGINE_0_9",
    "claim_environment",
    "release_environment",
    "claimed_environments",
]

#: Initial map size in bytes; the map doubles when a write finds it full.
DEFAULT_MAP_SIZE = 1 << 30
_MAX_MAP_SIZE = 1 << 40


def _engine_0_9() -> dict[str, Any]:
    """``lmdb.open`` arguments that pin LMDB's 0.9 engine for new environments.

    ``lmdb`` 3 bundles LMDB 0.9 and 1.0 and lets ``LMDB_DEFAULT_LIB_VERSION=1`` pick 1.0
    for new environments; its files (data format v3) are unreadable by the Rust side
    (LMDB 0.9) and by older ``lmdb`` releases. Releases before 3 have only 0.9 and no
    ``lib_version`` argument.
    """
    try:
        cast(Any, lmdb).version(lib_version=0)  # no such argument before lmdb 3
    except TypeError:  # lmdb < 3: one engine, 0.9
        return {}
    return {"lib_version": 0}


#: Extra ``lmdb.open`` arguments that select LMDB 0.9 (empty where it is the only engine).
ENGINE_0_9: dict[str, Any] = _engine_0_9()

# LMDB forbids opening one environment twice in one process: its locks are fcntl() locks,
# owned by the (process, file) pair, so closing a second handle releases the first one's
# locks (LMDB docs, "Caveats"). The Python store and the native engine (a separate LMDB
# build) must therefore never hold one directory at the same time: every opening of an
# environment by this SDK claims its directory here first.
_claims: dict[str, tuple[str, object]] = {}
_claims_lock = threading.Lock()


def claim_environment(path: str, holder: str) -> object:
    """Record that ``holder`` (a description, for errors) opens the environment in
    directory ``path``; returns the token to give :func:`release_environment`.

    Raises :class:`StorageError` naming the directory and the current holder when this
    process has it open already."""
    key = os.path.realpath(path)
    token = object()
    with _claims_lock:
        other = _claims.get(key)
        if other is not None:
            raise StorageError(
                f"lmdb store at {path}: the environment is already open in this process "
                f"({other[0]}); LMDB allows one handle per environment and process")
        _claims[key] = (holder, token)
    return token


def release_environment(token: object) -> None:
    """Forget the claim ``token`` (from :func:`claim_environment`). Idempotent; a token
    of the parent process does nothing in a forked child."""
    with _claims_lock:
        for key, (_, t) in _claims.items():
            if t is token:
                del _claims[key]
                return


def claimed_environments() -> dict[str, str]:
    """The directories this process has open now: real path -> holder."""
    with _claims_lock:
        return {key: holder for key, (holder, _) in _claims.items()}


def _forget_claims_in_child() -> None:
    # A forked child holds none of its parent's environments (it must open its own), and
    # the lock may have been held by a thread that does not exist in the child.
    global _claims_lock
    _claims_lock = threading.Lock()
    _claims.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_claims_in_child)


class LmdbStore:
    """An LMDB environment in directory ``path`` (created when missing).

    ``sync=True`` fsyncs every write transaction. ``readonly=True`` opens an existing
    store for reading only (nothing is created or written; a writer in another process
    may have it open; on a read-only directory it reads without the lock file). Raises
    :class:`StorageError` naming the path when it cannot be created or opened (not
    writable, a file, a corrupt environment, an environment of another format; with
    ``readonly``, no store there).
    """

    def __init__(self, path: str, *, sync: bool = True, map_size: int = DEFAULT_MAP_SIZE,
                 max_map_size: int = _MAX_MAP_SIZE, readonly: bool = False) -> None:
        self.path = path
        self.max_map_size = max(max_map_size, map_size)
        self.name = f"lmdb store at {path}"
        self._claim: object | None = None
        self.readonly = readonly
        try:
            if os.path.exists(path) and not os.path.isdir(path):
                raise StorageError(f"{self.name}: the path exists and is not a directory")
            if readonly:
                self._claim = claim_environment(path, "a read-only lmdb store")
                self._open_readonly(path)
                return
            os.makedirs(path, exist_ok=True)
            self._claim = claim_environment(path, "the Python lmdb store")
            self._env = lmdb.open(
                path, map_size=map_size, max_dbs=4, subdir=True, sync=sync, metasync=sync,
                readahead=False, lock=True, **ENGINE_0_9,
            )
            self._meta = self._env.open_db(META_DB)
            self._entries = self._env.open_db(ENTRIES_DB)
            with self._env.begin(write=True, db=self._meta) as txn:
                fmt = txn.get(FORMAT_KEY)
                if fmt is None:
                    txn.put(FORMAT_KEY, FORMAT_VALUE)
                elif fmt != FORMAT_VALUE:
                    raise StorageError(f"{self.name}: unknown layout {fmt!r}, expected "
                                       f"{FORMAT_VALUE!r}")
        except BaseException as e:
            env = getattr(self, "_env", None)
            if env is not None:
                env.close()
            if self._claim is not None:
                release_environment(self._claim)
                self._claim = None
            if isinstance(e, (lmdb.Error, OSError)):
                raise StorageError(f"{self.name}: cannot open: {e}") from e
            raise

    def _open_readonly(self, path: str) -> None:
        if not os.path.isfile(os.path.join(path, "data.mdb")):
            raise StorageError(f"{self.name}: no store there (no data.mdb)")
        try:
            # lock=True: the reader table tells a writer in another process which pages
            # this reader still sees.
            self._env = lmdb.open(path, readonly=True, max_dbs=4, subdir=True, lock=True,
                                  readahead=False)
        except lmdb.Error:
            if os.access(path, os.W_OK):
                raise
            # A read-only directory: no lock file can be made, and no writer can be there.
            self._env = lmdb.open(path, readonly=True, max_dbs=4, subdir=True, lock=False,
                                  readahead=False)
        try:
            self._meta = self._env.open_db(META_DB, create=False)
            self._entries = self._env.open_db(ENTRIES_DB, create=False)
        except lmdb.NotFoundError:
            self._env.close()
            raise StorageError(f"{self.name}: not an oaas-sdk store (no 'meta' and "
                               f"'entries' databases)") from None
        with self._env.begin(db=self._meta) as txn:
            fmt = txn.get(FORMAT_KEY)
        if fmt != FORMAT_VALUE:
            self._env.close()
            raise StorageError(f"{self.name}: unknown layout {fmt!r}, expected "
                               f"{FORMAT_VALUE!r}")

    def read(self, key: ObjectKey) -> StoredObject | None:
        try:
            return self._read(key)
        except lmdb.MapResizedError:  # another process grew the map: adopt its size
            self._env.set_mapsize(0)
            return self._read(key)

    def map_size(self) -> int:
        """Current LMDB map size in bytes."""
        return int(self._env.info()["map_size"])

    def _read(self, key: ObjectKey) -> StoredObject | None:
        okey = object_key_bytes(key)
        prefix = entries_prefix_bytes(okey)
        try:
            with self._env.begin(buffers=False) as txn:
                meta = txn.get(okey, db=self._meta)
                if meta is None:
                    return None
                entries: dict[str, bytes] = {}
                cur = txn.cursor(db=self._entries)
                if cur.set_range(prefix):
                    for k, v in cur:
                        if not k.startswith(prefix):
                            break
                        entries[k[len(prefix):].decode()] = v
        except lmdb.MapResizedError:
            raise
        except lmdb.Error as e:
            raise StorageError(f"{self.name}: read of {key} failed: {e}") from e
        try:
            version, created, updated = unpack_meta(meta)
        except ValueError as e:
            raise StorageError(f"{self.name}: metadata of {key} is corrupt: {e}") from e
        return StoredObject(version, created, updated, entries)

    def write_batch(self, records: list[WriteRecord]) -> list[Exception | None]:
        while True:
            try:
                return self._write(records)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:  # another process grew the map: adopt its size
                self._env.set_mapsize(0)
            except lmdb.Error as e:
                raise StorageError(f"{self.name}: write of {len(records)} commits failed: "
                                   f"{e}") from e

    def _grow(self) -> None:
        size = self._env.info()["map_size"]
        if size * 2 > self.max_map_size:
            raise StorageError(f"{self.name}: the map is full at {size} bytes (MDB_MAP_FULL; "
                               f"the limit is {self.max_map_size} bytes)")
        self._env.set_mapsize(size * 2)

    def _write(self, records: list[WriteRecord]) -> list[Exception | None]:
        results: list[Exception | None] = []
        versions: dict[bytes, tuple[int, int]] = {}
        with self._env.begin(write=True) as txn:
            for r in records:
                okey = object_key_bytes(r.key)
                if okey in versions:
                    found, created = versions[okey]
                else:
                    raw = txn.get(okey, db=self._meta)
                    found, created = (0, r.time_ms) if raw is None else unpack_meta(raw)[:2]
                if found != r.expected_version:
                    results.append(conflict(r, found))
                    continue
                if r.delete_object:
                    txn.delete(okey, db=self._meta)
                    self._delete_entries(txn, okey)
                    versions[okey] = (0, r.time_ms)
                else:
                    txn.put(okey, pack_meta(found + 1, created, r.time_ms), db=self._meta)
                    for name, value in r.entries.items():
                        txn.put(entry_key_bytes(okey, name), value, db=self._entries)
                    for name in r.deletes:
                        txn.delete(entry_key_bytes(okey, name), db=self._entries)
                    versions[okey] = (found + 1, created)
                results.append(None)
        return results

    def _delete_entries(self, txn: lmdb.Transaction, okey: bytes) -> None:
        prefix = entries_prefix_bytes(okey)
        cur = txn.cursor(db=self._entries)
        if cur.set_range(prefix):
            while cast(bytes, cur.key()).startswith(prefix):  # buffers=False: bytes
                if not cur.delete():
                    break

    def scan(self, cls_id: str, partition_id: int | None = None) -> Iterator[ObjectKey]:
        prefix = class_prefix_bytes(cls_id, partition_id)
        keys: list[ObjectKey] = []
        with self._env.begin(db=self._meta) as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for k in cur.iternext(values=False):
                    if not k.startswith(prefix):
                        break
                    keys.append(parse_object_key_bytes(cls_id, k))
        return iter(keys)

    def classes(self) -> list[str]:
        out: list[str] = []
        with self._env.begin(db=self._meta) as txn:
            cur = txn.cursor()
            # One seek per class: after a class, jump past all its keys.
            found = cur.set_range(FIRST_OBJECT_KEY)
            while found:
                cls_id = class_id_bytes(cur.key())
                if cls_id is None:
                    found = cur.next()
                    continue
                out.append(cls_id.decode())
                found = cur.set_range(after_class_bytes(cls_id))
        return out

    def close(self) -> None:
        """Close the environment and release its directory. Idempotent."""
        self._env.close()
        if self._claim is not None:
            release_environment(self._claim)
            self._claim = None

