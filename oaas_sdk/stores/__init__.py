"""State stores: where committed entries live.

One interface (:class:`Store`), several implementations chosen by the ``storage`` URL:

- ``memory``: a dict, nothing persisted (what ``mock_mode=True`` uses);
- ``lmdb:<dir>``: the embedded default, an LMDB environment in ``<dir>`` (``./.oaas``);
- ``redis://host:port/db`` (``rediss://`` with TLS) / ``redis+cluster://host:port,...``
  (``rediss+cluster://``): shared stores on Redis or a Redis Cluster (``stores/redis.py``).

The key layout and record formats are in ``docs/format.md`` ("Store layout") and, as
code, in :mod:`.layout`. Modules: :mod:`.protocol` (the :class:`Store` interface),
:mod:`.records` (identities, commit records, stored objects), :mod:`.url` (``storage``
URLs, :func:`open_store`), :mod:`.layout`, and one module per store: :mod:`.memory`,
:mod:`.lmdb`, :mod:`.redis`.
"""

from __future__ import annotations

from .layout import _CLS_ID as _CLS_ID
from .layout import _META as _META
from .layout import _STR_ID as _STR_ID
from .layout import (
    META_FORMAT,
    check_identity,
    entry_key_bytes,
    object_key_bytes,
    pack_meta,
    unpack_meta,
)
from .protocol import Store
from .records import ObjectKey, StoredObject, WriteRecord, apply_record, conflict
from .url import display_url, lmdb_location, open_store, parse_storage_url

__all__ = [
    "ObjectKey",
    "WriteRecord",
    "StoredObject",
    "Store",
    "parse_storage_url",
    "open_store",
    "object_key_bytes",
    "entry_key_bytes",
    "META_FORMAT",
    "pack_meta",
    "unpack_meta",
    "apply_record",
    "lmdb_location",
    "display_url",
    "check_identity",
    "conflict",
]
