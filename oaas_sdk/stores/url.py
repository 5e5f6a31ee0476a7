"""The ``storage`` setting: parsing store URLs and opening the store one names."""

from __future__ import annotations

from ..errors import ConfigError
from .protocol import Store

__all__ = ["display_url", "lmdb_location", "open_store", "parse_storage_url"]


def parse_storage_url(url: str) -> tuple[str, str]:
    """Split a ``storage`` setting into (kind, location).

    ``"memory"`` -> ("memory", ""); ``"lmdb:./dir"`` or ``"lmdb://./dir"`` -> ("lmdb", "./dir");
    ``"redis://..."`` / ``"rediss://..."`` -> ("redis", url); ``"redis+cluster://..."`` /
    ``"rediss+cluster://..."`` -> ("redis+cluster", url).
    Raises :class:`ConfigError` for anything else.
    """
    if url == "memory":
        return "memory", ""
    if url.startswith("lmdb:"):
        path = url[len("lmdb:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError(f"storage {url!r}: lmdb needs a directory, e.g. 'lmdb:./.oaas'")
        return "lmdb", path
    if url.startswith("redis://") or url.startswith("rediss://"):
        return "redis", url
    if url.startswith("redis+cluster://") or url.startswith("rediss+cluster://"):
        return "redis+cluster", url
    raise ConfigError(
        f"storage {url!r} not understood: use 'memory', 'lmdb:<dir>', 'redis://host:port/db' "
        "or 'redis+cluster://host:port,...'"
    )


def display_url(url: str) -> str:
    """``url`` as it may be shown (stats, logs): a password in a Redis URL is replaced by
    ``***``; other URLs are returned unchanged."""
    if not url.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")):
        return url
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    query = ""
    if not slash:
        authority, q, query = authority.partition("?")
        query = q + query
    creds, at, hosts = authority.rpartition("@")
    if ":" in creds:  # [user]:password (a lone name is a user name, as redis-py reads it)
        creds = creds.partition(":")[0] + ":***"
    return f"{scheme}://{creds}{at}{hosts}{slash}{tail}{query}"


def lmdb_location(location: str) -> tuple[str, dict[str, int]]:
    """Split the location of an ``lmdb:`` URL into (directory, options).

    Options follow ``?``: ``map_size`` (initial LMDB map, bytes) and ``max_map_size``
    (largest the map may grow to, bytes), e.g. ``lmdb:./s?map_size=1048576``. Raises
    :class:`ConfigError` for another option or a value that is not a positive integer.
    """
    path, _, query = location.partition("?")
    opts: dict[str, int] = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        if name not in ("map_size", "max_map_size") or not value.isdigit() or int(value) <= 0:
            raise ConfigError(f"lmdb option {part!r} not understood: use map_size=<bytes> "
                              "or max_map_size=<bytes>")
        opts[name] = int(value)
    return path, opts


def open_store(url: str, *, sync: bool = True, readonly: bool = False,
               retry_deadline_s: float = 30.0, wait_replicas: int = 0,
               wait_timeout_s: float = 1.0) -> Store:
    """Open the store named by a ``storage`` URL (see :func:`parse_storage_url`).

    ``sync``: fsync every transaction (LMDB). ``readonly``: open for reading only (the
    inspector): nothing is created or written, and another process may have the store
    open for writing (the Redis stores are opened as usual: reading writes nothing).
    ``retry_deadline_s``: how long the Redis stores retry an unreachable server, seconds;
    ``wait_replicas``/``wait_timeout_s``: their ``WAIT`` after each batch (see
    :class:`~oaas_sdk.stores.redis.RedisStore`).
    Raises :class:`StorageError` when the store cannot be opened (with ``readonly``, also
    when there is no LMDB store there) and :class:`ConfigError` for a malformed URL.
    """
    kind, loc = parse_storage_url(url)
    if kind == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if kind == "lmdb":
        from .lmdb import LmdbStore

        path, opts = lmdb_location(loc)
        return LmdbStore(path, sync=sync, readonly=readonly, **opts)
    from .redis import RedisStore

    return RedisStore(url, cluster=kind == "redis+cluster", retry_deadline_s=retry_deadline_s,
                      wait_replicas=wait_replicas, wait_timeout_s=wait_timeout_s)
