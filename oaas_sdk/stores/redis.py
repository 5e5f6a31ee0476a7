"""The shared stores: one Redis server, or a Redis Cluster, through redis-py.

Layout (``docs/format.md``, "Redis"): one hash per object under
``<prefix>:{<cls_id>/<partition_id>/n:<u64>}`` (numeric ids) or ``.../s:<string id>``;
its fields are the entry names (value: codec bytes) plus ``@version``, ``@created``,
``@updated`` (decimal) and ``@commit`` (the token of the last commit). The braces are the
hash tag: every key of one object lies in one cluster slot. A batch of commits is one call
of a Lua script per node (per cluster node that serves the objects' slots; the script
has the ``allow-cross-slot-keys`` flag), atomic on the server, which checks every
object's version and writes those that pass; a batch that needs several calls (several
nodes, or a large batch) sends them as one pipeline (per node on a cluster).
redis-py: https://redis.readthedocs.io/

Faults: a lost connection or a restarting server is retried with backoff until
``retry_deadline_s`` has passed since the batch started; then the batch fails with
:class:`StorageError`. Retries never apply a commit twice: each commit carries a random
token that the script stores, and after a broken exchange the store reads back which of
the unacknowledged commits landed before sending the rest.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from ..errors import ConfigError, StorageError
from .layout import DEFAULT_REDIS_PREFIX as DEFAULT_PREFIX
from .layout import parse_redis_object_key as parse_object_key
from .layout import redis_object_key as object_key
from .layout import redis_scan_pattern
from .records import ObjectKey, StoredObject, WriteRecord, conflict

try:
    import redis
    import redis.exceptions as rexc
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    _HAVE_REDIS = True
except ImportError:  # pragma: no cover - exercised only without the extra
    _HAVE_REDIS = False

__all__ = ["RedisStore", "DEFAULT_PREFIX", "COMMIT_SCRIPT", "object_key", "parse_object_key"]

_PREFIX = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")

#: The commit of a batch of objects on one node (``redis_commit.lua``, whose head
#: comment gives its arguments): KEYS[1] routes the call, ARGV holds the commits, each
#: version-checked and applied in order (a resend of a landed commit counts as applied);
#: the reply lists the conflicts, ``(commit number from 1, version found)`` pairs (a
#: version mismatch: nothing of that commit written). It reads every hash before writing
#: any, so a hash the node does not serve fails the call whole ("OAASMOVED ...").
COMMIT_SCRIPT = (Path(__file__).parent / "redis_commit.lua").read_text(encoding="utf-8")
#: At most this many commits go into one script call (more: several calls, pipelined) ...
CALL_MAX_COMMITS = 1024
#: ... and at most about this many bytes of entry values (a call holds the server while it
#: runs; a single larger commit goes in a call of its own).
CALL_MAX_BYTES = 4 << 20

# Errors after which the exchange is retried (the server is away, restarting, or the
# cluster is failing over or resharding).
_TRANSIENT: tuple[type[BaseException], ...] = ()
_CLUSTER: tuple[type[BaseException], ...] = ()
if _HAVE_REDIS:
    _TRANSIENT = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError,
                  rexc.ClusterDownError, rexc.TryAgainError, rexc.MasterDownError,
                  rexc.ReadOnlyError, rexc.SlotNotCoveredError, rexc.AskError, OSError)
    # AskError (and MovedError, its subclass): a node's own pipeline (the batch calls go
    # to each node on its connection) met a slot that moved; the client is opened again.
    _CLUSTER = (rexc.ClusterError, rexc.RedisClusterException)


class ReplicasBehind(Exception):
    """``WAIT`` counted fewer replicas than ``wait_replicas`` within ``wait_timeout_s``
    (retried until the deadline, then reported inside :class:`StorageError`)."""


def _transient(e: BaseException) -> bool:
    if isinstance(e, ReplicasBehind):
        return True
    if isinstance(e, rexc.AuthenticationError | rexc.AuthorizationError):
        return False  # ConnectionErrors to redis-py, but retrying cannot help
    if isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e):
        return False  # a certificate the CA does not vouch for stays so
    if isinstance(e, _TRANSIENT):
        return True
    if isinstance(e, rexc.ResponseError) and str(e).startswith(_TRANSIENT_REPLIES):
        return True  # a reply error redis-py did not map to its own class
    # redis-py's cluster client wraps lost nodes in generic errors: tell them by message.
    text = str(e).lower()
    return isinstance(e, _CLUSTER) and any(
        w in text for w in ("connect", "slot", "node", "ttl", "exhaust", "cluster is down"))


_TRANSIENT_REPLIES = ("CLUSTERDOWN", "TRYAGAIN", "LOADING", "MASTERDOWN", "READONLY",
                      "MOVED", "ASK", "OAASMOVED")
T = TypeVar("T")
_BACKOFF_FIRST_S = 0.02
_BACKOFF_MAX_S = 1.0


def _redact(url: str) -> str:
    """``url`` without its user and password (for names in messages)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


class RedisStore:
    """A store on one Redis server (``cluster=False``) or a Redis Cluster.

    ``url``: ``redis://[[user]:password@]host:port[/db][?options]``, ``rediss://...``
    (TLS), or ``redis+cluster://[[user]:password@]host:port[,host:port...][?options]``
    (``rediss+cluster://`` with TLS). Options: ``prefix`` (first part of every key,
    default ``oaas``) and redis-py's connection options (``socket_timeout``,
    ``socket_connect_timeout``, ``ssl_cert_reqs``, ...). ``retry_deadline_s``: how long
    (seconds) a batch or read is retried while the server cannot be reached.
    ``wait_replicas`` (> 0): after the script calls of a batch, ``WAIT wait_replicas
    wait_timeout_s`` on each node written, on the connection that wrote: the batch
    succeeds once that many replicas of every node written hold it; fewer is retried (the
    commits are confirmed and waited for again) until ``retry_deadline_s``, then
    :class:`StorageError` (docs/format.md, "Durability on Redis").

    Raises :class:`ConfigError` for a malformed URL or when redis-py is not installed,
    :class:`StorageError` when the server cannot be reached within the deadline.
    """

    def __init__(self, url: str, *, cluster: bool = False, retry_deadline_s: float = 30.0,
                 wait_replicas: int = 0, wait_timeout_s: float = 1.0) -> None:
        if not _HAVE_REDIS:
            raise ConfigError(f"storage {_redact(url)!r} needs redis-py: "
                              "pip install 'oaas-sdk[redis]'")
        if wait_replicas < 0 or not wait_timeout_s > 0:
            raise ConfigError(f"storage {_redact(url)!r}: wait_replicas must be >= 0 and "
                              f"wait_timeout_s > 0 (got {wait_replicas!r}, "
                              f"{wait_timeout_s!r})")
        self.cluster = cluster
        self.retry_deadline_s = retry_deadline_s
        self.wait_replicas = wait_replicas
        self.wait_timeout_s = wait_timeout_s
        self.name = f"redis store at {_redact(url)}"
        self.prefix, client_url, options = _split_options(url)
        self._sha: str | None = None
        self._closed = False
        self._client: Any = None
        self._client_lock = threading.Lock()

        def open_client() -> Any:
            try:
                return (self._open_cluster(client_url, options) if cluster
                        else self._open_single(client_url, options))
            except (ValueError, TypeError) as e:
                raise ConfigError(f"storage {_redact(url)!r}: {e}") from None

        self._open_client = open_client
        self._retrying(lambda client: None, "connect")

    # -- opening ----------------------------------------------------------------------
    @staticmethod
    def _timeouts(options: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 10.0}
        out.update(options)
        return out

    def _open_single(self, url: str, options: dict[str, Any]) -> Any:
        # Our own loop retries (with the deadline and the read-back of landed commits):
        # redis-py must not resend a pipeline by itself.
        return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0),
                                    **self._timeouts(options))

    def _open_cluster(self, url: str, options: dict[str, Any]) -> Any:
        parts = urlsplit(url)
        netloc = parts.netloc
        creds, _, hosts = netloc.rpartition("@")
        nodes = []
        for hp in filter(None, hosts.split(",")):
            host, sep, port = hp.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"cluster node {hp!r} is not host:port")
            nodes.append(ClusterNode(host.strip("[]"), int(port)))
        if not nodes:
            raise ValueError("no cluster node given (redis+cluster://host:port,host:port)")
        if parts.path not in ("", "/", "/0"):
            raise ValueError("a Redis Cluster has only database 0")
        kw = self._timeouts(options)
        if creds:  # as redis-py reads a one-server URL: [user][:password]@
            if parts.username:
                kw["username"] = unquote(parts.username)
            if parts.password is not None:
                kw["password"] = unquote(parts.password)
        if parts.scheme.startswith("rediss"):
            kw["ssl"] = True
        return RedisCluster(startup_nodes=nodes, **kw)

    def _load_script(self, client: Any) -> None:
        """SCRIPT LOAD the commit script (on every primary of a cluster)."""
        sha = client.script_load(COMMIT_SCRIPT)
        if isinstance(sha, dict):  # some redis-py versions answer per node
            sha = next(iter(sha.values()))
        self._sha = sha.decode() if isinstance(sha, bytes) else str(sha)

    def _connected(self) -> Any:
        """The client, opened (and the script loaded) when there is none."""
        with self._client_lock:
            if self._client is None:
                client = self._open_client()
                try:
                    self._load_script(client)
                except BaseException:
                    client.close()
                    raise
                self._client = client
            return self._client

    def _drop(self, client: Any) -> None:
        """Forget a cluster client after a transient error: the next attempt opens a new
        one, which learns the cluster's current layout (a replica promoted by a failover)
        from whichever startup node answers. A one-server client reconnects by itself."""
        if not self.cluster:
            return
        with self._client_lock:
            if self._client is not client:
                return
            self._client = None
        try:
            client.close()
        except Exception:  # closing a broken client must not raise
            pass

    # -- retries ----------------------------------------------------------------------
    def _retrying(self, fn: Callable[[Any], T], what: str) -> T:
        """``fn(client)``, retried with exponential backoff on transient errors until
        ``retry_deadline_s`` has passed; then :class:`StorageError`."""
        if self._closed:
            raise StorageError(f"{self.name}: the store is closed")
        deadline = time.monotonic() + self.retry_deadline_s
        delay = _BACKOFF_FIRST_S
        while True:
            client = None
            try:
                client = self._connected()
                return fn(client)
            except StorageError:
                raise
            except Exception as e:
                if client is not None and _transient(e):
                    self._drop(client)
                if not _transient(e):
                    if isinstance(e, rexc.RedisError | rexc.RedisClusterException):
                        raise StorageError(f"{self.name}: {what} failed: "
                                           f"{type(e).__name__}: {e}") from e
                    raise
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise StorageError(
                        f"{self.name}: {what} failed: {type(e).__name__}: {e} (retried for "
                        f"{self.retry_deadline_s:g} s, store_retry_deadline_s)") from e
                time.sleep(min(delay, left))
                delay = min(delay * 2, _BACKOFF_MAX_S)

    # -- reads ------------------------------------------------------------------------
    def read(self, key: ObjectKey) -> StoredObject | None:
        """The committed object, or ``None``. Raises :class:`StorageError` (unreachable
        past the deadline, or a hash that is not an object record)."""
        rkey = object_key(self.prefix, key)
        raw: dict[bytes, bytes] = self._retrying(lambda client: client.hgetall(rkey),
                                                 f"read of {key}")
        if not raw:
            return None
        try:
            version = int(raw.pop(b"@version"))
            created = int(raw.pop(b"@created", b"0"))
            updated = int(raw.pop(b"@updated", b"0"))
            raw.pop(b"@commit", None)
            entries = {k.decode(): v for k, v in raw.items()}
        except (KeyError, ValueError) as e:
            raise StorageError(f"{self.name}: {rkey.decode()} is not an object record "
                               f"({e!r})") from None
        return StoredObject(version, created, updated, entries)

    # -- writes -----------------------------------------------------------------------
    def write_batch(self, records: list[WriteRecord]) -> list[Exception | None]:
        """Apply ``records`` in order: one script call per node (per
        :data:`CALL_MAX_COMMITS` commits), pipelined; with ``wait_replicas``, then ``WAIT``
        on every node written. Returns a result per record (``None`` or
        :class:`ConflictError`). Raises :class:`StorageError` once the server has been
        unreachable (or, with ``wait_replicas``, fewer replicas acknowledged) for
        ``retry_deadline_s``: each commit then either landed whole or not at all (one
        whose answer was lost may have landed; the object's next commit then meets
        :class:`ConflictError`)."""
        results: list[Exception | None] = [None] * len(records)
        todo = list(range(len(records)))
        tokens = [os.urandom(8).hex() for _ in records]
        # Commits found landed by a read-back: with WAIT they are sent again (the script
        # confirms them and rewrites their token, which the replicas must then ack).
        confirm: set[int] = set()
        state = {"in_doubt": False}

        def attempt(client: Any) -> None:
            nonlocal todo, confirm
            if state["in_doubt"]:
                pending = sorted(set(todo) | confirm)
                todo = self._landed(client, records, tokens, pending)
                if self.wait_replicas:
                    confirm = set(pending) - set(todo)
            send = sorted(set(todo) | confirm)
            if not send:
                return
            state["in_doubt"] = True  # from here on, a break leaves the outcome unknown
            again = self._send(client, records, tokens, send, results, confirm)
            if again:  # scripts unknown to a (restarted) server: load and send again
                self._load_script(client)
                if self._send(client, records, tokens, again, results, confirm):
                    raise StorageError(f"{self.name}: the commit script cannot be loaded")
            state["in_doubt"] = False
            todo, confirm = [], set()

        self._retrying(attempt, f"write of {len(records)} commits")
        return results

    def _calls(self, client: Any, records: list[WriteRecord], tokens: list[str],
               todo: list[int]) -> list[tuple[Any, list[int], list[Any]]]:
        """The script calls for ``todo``: ``(node, indices, EVALSHA arguments)`` each.
        The commits are grouped by the node that serves their hash (on one server: one
        group, node ``None``), in batch order within a group, and a group is cut into
        calls of at most :data:`CALL_MAX_COMMITS` commits and about
        :data:`CALL_MAX_BYTES` bytes."""
        groups: dict[Any, list[int]] = {}
        keys = {i: object_key(self.prefix, records[i].key) for i in todo}
        nodes: dict[Any, Any] = {None: None}
        if self.cluster:
            for i in todo:
                node = client.nodes_manager.get_node_from_slot(client.keyslot(keys[i]))
                nodes[node.name] = node
                groups.setdefault(node.name, []).append(i)
        else:
            groups[None] = list(todo)
        calls: list[tuple[Any, list[int], list[Any]]] = []
        for name, idx in groups.items():
            start = 0
            while start < len(idx):
                part: list[int] = []
                args: list[Any] = []
                size = 0
                for i in idx[start:]:
                    r = records[i]
                    weight = sum(len(v) for v in r.entries.values())
                    if part and (len(part) >= CALL_MAX_COMMITS or size + weight > CALL_MAX_BYTES):
                        break
                    part.append(i)
                    size += weight
                    args += [keys[i], r.expected_version, r.expected_version + 1, r.time_ms,
                             "d" if r.delete_object else "w", tokens[i], len(r.entries),
                             len(r.deletes)]
                    for entry, value in r.entries.items():
                        args.append(entry)
                        args.append(value)
                    args.extend(r.deletes)
                start += len(part)
                calls.append((nodes[name], part,
                              ["EVALSHA", self._sha, 1, keys[part[0]], len(part), *args]))
        return calls

    def _send(self, client: Any, records: list[WriteRecord], tokens: list[str],
              todo: list[int], results: list[Exception | None],
              confirm: AbstractSet[int] = frozenset()) -> list[int]:
        """The batch-script calls for ``todo`` (see :meth:`_calls`): one pipeline per node
        (on its one connection; with ``wait_replicas``, ending with ``WAIT``). Fills
        ``results`` (``confirm``: commits known to have landed, whose replies only
        confirm them); returns the indices refused with NOSCRIPT (not executed)."""
        calls = self._calls(client, records, tokens, todo)
        by_node: dict[Any, list[tuple[list[int], list[Any]]]] = {}
        for node, idx, args in calls:
            by_node.setdefault(node.name if node is not None else None, []).append((idx, args))
        conns = {(n.name if n is not None else None): n for n, _, _ in calls}
        again: list[int] = []
        for name, node_calls in by_node.items():
            conn = client if name is None else client.get_redis_connection(conns[name])
            pipe = conn.pipeline(transaction=False)
            for _, args in node_calls:
                pipe.execute_command(*args)
            if self.wait_replicas:
                pipe.execute_command("WAIT", self.wait_replicas,
                                     max(1, round(self.wait_timeout_s * 1000)))
            replies = pipe.execute(raise_on_error=False)
            if self.wait_replicas:
                acked = replies.pop()
                if isinstance(acked, Exception):
                    raise acked
                if int(acked) < self.wait_replicas:
                    raise ReplicasBehind(
                        f"WAIT: {acked} of {self.wait_replicas} replicas of "
                        f"{name or 'the server'} acknowledged within "
                        f"{self.wait_timeout_s:g} s (store_wait_timeout_s)")
            for (idx, _), reply in zip(node_calls, replies, strict=True):
                if isinstance(reply, rexc.NoScriptError):
                    again.extend(idx)
                elif _transient(reply):
                    raise reply
                elif isinstance(reply, Exception):
                    raise StorageError(f"{self.name}: commit of {records[idx[0]].key} "
                                       f"failed: {type(reply).__name__}: {reply}")
                elif not isinstance(reply, list) or len(reply) % 2:
                    raise StorageError(f"{self.name}: unexpected reply of the commit "
                                       f"script: {reply!r:.200}")
                else:  # the conflicts: (commit number from 1, version found) pairs
                    for i in idx:
                        results[i] = None
                    for c, found in zip(reply[::2], reply[1::2], strict=True):
                        i = idx[int(c) - 1]
                        if i not in confirm:  # one that landed before (read back) stays
                            results[i] = conflict(records[i], int(found))
        again.sort()
        return again

    def _landed(self, client: Any, records: list[WriteRecord], tokens: list[str],
                todo: list[int]) -> list[int]:
        """After a broken exchange: which of ``todo`` landed (their results stay
        ``None``); returns the others. Commits of one object land in order, so the
        object's stored token names the last of its commits that landed."""
        keys = sorted({records[i].key for i in todo}, key=repr)
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(object_key(self.prefix, k), "@version", "@commit")
        stored = {k: (v, t) for k, (v, t) in zip(keys, pipe.execute(), strict=True)}
        rest: list[int] = []
        by_key: dict[Any, list[int]] = {}
        for i in todo:
            by_key.setdefault(records[i].key, []).append(i)
        for k, idx in by_key.items():
            version, token = stored[k]
            tok = token.decode() if token is not None else None
            upto = -1
            for pos, i in enumerate(idx):
                r = records[i]
                if r.delete_object and version is None:
                    upto = pos  # gone: this delete (or a later one) landed
                elif tok == tokens[i] and version is not None and int(version) == r.new_version:
                    upto = pos
            rest.extend(idx[upto + 1:])
        rest.sort()
        return rest

    # -- scans ------------------------------------------------------------------------
    def _scan(self, client: Any, pattern: str) -> Iterator[bytes]:
        if self.cluster:
            for node in client.get_primaries():
                conn = client.get_redis_connection(node)
                yield from conn.scan_iter(match=pattern, count=1000)
        else:
            yield from client.scan_iter(match=pattern, count=1000)

    def _scan_keys(self, pattern: str, what: str) -> list[ObjectKey]:
        def run(client: Any) -> list[ObjectKey]:
            out = []
            for raw in self._scan(client, pattern):
                k = parse_object_key(self.prefix, raw)
                if k is not None:
                    out.append(k)
            return out

        return self._retrying(run, what)

    def scan(self, cls_id: str, partition_id: int | None = None) -> Iterator[ObjectKey]:
        """Identities of the stored objects of ``cls_id`` (one partition when given), in
        no particular order. SCANs the keyspace (every primary on a cluster)."""
        pattern = redis_scan_pattern(self.prefix, cls_id, partition_id)
        keys = self._scan_keys(pattern, f"scan of {cls_id}")
        return iter([k for k in keys if k[0] == cls_id])

    def classes(self) -> list[str]:
        """Sorted ids of the classes that have stored objects (SCANs the keyspace)."""
        keys = self._scan_keys(redis_scan_pattern(self.prefix, None), "scan of classes")
        return sorted({k[0] for k in keys})

    def close(self) -> None:
        """Close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._client_lock:
            client, self._client = self._client, None
        try:
            if client is not None:
                client.close()
        except Exception:  # closing a broken connection must not raise
            pass


def native_target(url: str) -> tuple[str, str, str, bool, str | None] | None:
    """What the native Redis store (``oprc-py/core/src/store/redis.rs``) needs to serve
    ``url``: ``(client URL, key prefix, name for messages, cluster, CA file)``, or ``None``
    when the URL needs the Python store: redis-py connection options in the query (the
    native store understands ``prefix`` and, with TLS, ``ssl_ca_certs``: a PEM file of
    the CA certificates that verify the server; without it, the system's). For a cluster
    the client URL is the startup nodes' ``redis[s]://[[user]:password@]host:port`` URLs,
    one per line. Raises :class:`ConfigError` for a bad prefix or a malformed cluster
    URL."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        return None
    cluster = scheme.endswith("+cluster")
    tls = scheme.startswith("rediss")
    prefix, client_url, options = _split_options(url)
    parts = urlsplit(client_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) if not cluster else {
        k: str(v) for k, v in options.items()}
    ca_file = query.pop("ssl_ca_certs", None) if tls else None
    if query:
        return None
    name = f"redis store at {_redact(url)}"
    if not cluster:
        return parts._replace(query="").geturl(), prefix, name, False, ca_file
    creds, at, hosts = parts.netloc.rpartition("@")
    nodes = []
    for hp in filter(None, hosts.split(",")):
        host, sep, port = hp.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"storage {_redact(url)!r}: cluster node {hp!r} is not host:port")
        nodes.append(f"{'rediss' if tls else 'redis'}://{creds}{at}{hp}")
    if not nodes:
        raise ConfigError(f"storage {_redact(url)!r}: no cluster node given "
                          "(redis+cluster://host:port,host:port)")
    if parts.path not in ("", "/", "/0"):
        raise ConfigError(f"storage {_redact(url)!r}: a Redis Cluster has only database 0")
    return "\n".join(nodes), prefix, name, True, ca_file


def _split_options(url: str) -> tuple[str, str, dict[str, Any]]:
    """(key prefix, URL for redis-py, options for the cluster client) from a store URL.

    Our own option (``prefix``) is taken out of the query; the rest stays in the URL for
    ``Redis.from_url`` (one server) or becomes keyword arguments (cluster, whose URL we
    parse ourselves). Raises :class:`ConfigError` for a bad prefix."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name == "prefix":
            if not _PREFIX.fullmatch(value):
                raise ConfigError(f"redis option prefix={value!r}: expected "
                                  "[A-Za-z0-9_.:-]{1,64}")
            prefix = value
        else:
            rest.append((name, value))
    base = parts._replace(query=urlencode(rest)).geturl()
    options: dict[str, Any] = {}
    if parts.scheme.endswith("+cluster"):
        base = parts._replace(query="").geturl()
        for name, value in rest:
            options[name] = _option_value(value)
    return prefix, base, options


def _option_value(value: str) -> Any:
    low = value.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value
