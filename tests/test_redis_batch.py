"""The Redis batch commit protocol and WAIT (docs/format.md, "Redis and Redis Cluster",
"Durability on Redis"), on both implementations.

One script call commits a batch's objects per node; every object is version-checked on
its own; with ``store_wait_replicas`` the batch waits for replicas, and a cluster
failover keeps every commit acknowledged that way. Servers are the session's own or
started here (tests/redis_servers.py); nothing else is touched.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oaas_sdk import ConflictError, OaasConfig, StorageError, oaas
from oaas_sdk.stores import WriteRecord, open_store
from oaas_sdk.stores.redis import CALL_MAX_COMMITS, COMMIT_SCRIPT

from .models import Counter
from .redis_servers import RedisCluster, RedisServer, need_redis

redis = pytest.importorskip("redis")

_prefix = itertools.count(1)


def fresh_prefix() -> str:
    return f"b{os.getpid()}x{next(_prefix)}"


def native_flag(impl: str) -> str:
    return "on" if impl == "native" else "off"


@pytest.fixture(autouse=True)
def _back_to_mock() -> Iterator[None]:
    yield
    oaas.configure(OaasConfig(mock_mode=True, native="off"))


def script_calls(server: RedisServer) -> int:
    """How many EVALSHA calls ``server`` has run (INFO commandstats)."""
    m = re.search(r"cmdstat_evalsha:calls=(\d+)", server.cli("info", "commandstats"))
    return int(m.group(1)) if m else 0


def test_a_batch_is_one_script_call(impl: str, redis_server: RedisServer) -> None:
    """40 objects committed together cost the server a handful of script calls (the
    engine may write the first commit alone), not one per object; all are stored. The
    batch window is long (1 s) so that a loaded machine queueing the 40 commits slowly
    still fills one batch."""
    url = f"{redis_server.url}?prefix={fresh_prefix()}"
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl), batch_max_delay_ms=1000))
    objs = [Counter.create(obj_id=i, count=i) for i in range(40)]
    for o in objs:
        o.count += 100
    before = script_calls(redis_server)
    asyncio.run(oaas.commit_all_async())
    calls = script_calls(redis_server) - before
    # One per object was the old protocol (40); the server-wide count may also include a
    # straggling commit of an earlier test's engine on this shared server.
    assert 1 <= calls <= 8, calls
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
    assert [Counter.load(i).count for i in range(40)] == [i + 100 for i in range(40)]


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_batch_results_are_per_object(kind: str, request: pytest.FixtureRequest) -> None:
    """In one batch (more commits than one call holds, over every node of a cluster): a
    stale commit gets ConflictError and writes nothing, the others land, and commits of
    one object apply in batch order."""
    server = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster")
    store = open_store(f"{server.url}?prefix={fresh_prefix()}")
    try:
        n = CALL_MAX_COMMITS + 50
        first = [WriteRecord(("b.C", 0, i), 0, {"v": b"1"}) for i in range(n)]
        assert store.write_batch(first) == [None] * n
        recs = [WriteRecord(("b.C", 0, i), 1, {"v": b"2"}) for i in range(n)]
        recs[7] = WriteRecord(("b.C", 0, 7), 0, {"v": b"stale"})  # version 0: stale
        recs.append(WriteRecord(("b.C", 0, 3), 2, {"v": b"3"}, deletes=("w",)))
        recs.append(WriteRecord(("b.C", 0, 5), 2, delete_object=True))
        out = store.write_batch(recs)
        assert isinstance(out[7], ConflictError)
        assert [i for i, r in enumerate(out) if r is not None] == [7]
        seven = store.read(("b.C", 0, 7))
        assert seven is not None and seven.version == 1 and seven.entries == {"v": b"1"}
        three = store.read(("b.C", 0, 3))
        assert three is not None and three.version == 3 and three.entries == {"v": b"3"}
        assert store.read(("b.C", 0, 5)) is None
        last = store.read(("b.C", 0, n - 1))
        assert last is not None and last.version == 2 and last.entries == {"v": b"2"}
    finally:
        store.close()


def test_a_hash_of_another_node_fails_the_call_before_any_write(
        redis_cluster: RedisCluster) -> None:
    """The script reads every hash first: a call whose second hash lives on another node
    answers OAASMOVED and writes nothing, not even the first (local) hash."""
    p = fresh_prefix()
    keys = [f"{p}:{{m/0/n:{i}}}" for i in range(40)]
    node = redis_cluster.primary_of(keys[0])
    other = next(k for k in keys if redis_cluster.primary_of(k).port != node.port)
    sha = node.cli("script", "load", COMMIT_SCRIPT)
    out = node.cli("evalsha", sha, "1", keys[0], "2",
                   keys[0], "0", "1", "5", "w", "t1", "1", "0", "f", "x",
                   other, "0", "1", "5", "w", "t2", "1", "0", "f", "x")
    assert out.startswith("OAASMOVED"), out
    assert node.cli("exists", keys[0]) == "0"
    out = node.cli("evalsha", sha, "1", keys[0], "1", keys[0], "0", "1", "5", "w", "t1", "1",
                   "0", "f", "x")
    assert out.split() == []  # no conflicts
    assert node.cli("hget", keys[0], "@commit") == "t1"


def test_a_call_sent_twice_lands_once_and_answers_applied(redis_server: RedisServer) -> None:
    """A client that resends a whole call after losing its answer (two commits of one
    object and one of another): the second run writes nothing new and answers every
    commit as applied; a call with another token is a conflict."""
    p = fresh_prefix()
    a, b = f"{p}:{{t/0/n:1}}", f"{p}:{{t/0/n:2}}"
    sha = redis_server.cli("script", "load", COMMIT_SCRIPT)
    call = ["evalsha", sha, "1", a, "3",
            a, "0", "1", "5", "w", "ta1", "1", "0", "f", "x",
            a, "1", "2", "6", "w", "ta2", "1", "0", "f", "y",
            b, "0", "1", "5", "w", "tb1", "1", "0", "f", "z"]
    assert redis_server.cli(*call).split() == []  # the reply lists conflicts only
    assert redis_server.cli(*call).split() == []
    assert redis_server.cli("hget", a, "f") == "y"
    assert redis_server.cli("hget", a, "@version") == "2"
    other = [x.replace("ta1", "zz1").replace("ta2", "zz2") for x in call]
    # (commit number, version found) of each conflict; b's commit is still a resend
    assert redis_server.cli(*other).split() == ["1", "2", "2", "2"]
    assert redis_server.cli("hget", a, "f") == "y"


# -- WAIT -------------------------------------------------------------------------------
def test_wait_without_replicas_fails_after_the_deadline(impl: str,
                                                        redis_server: RedisServer) -> None:
    """store_wait_replicas=1 on a server without replicas: WAIT counts 0, the commit is
    retried until store_retry_deadline_s and fails with StorageError naming WAIT."""
    url = f"{redis_server.url}?prefix={fresh_prefix()}"
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl), store_wait_replicas=1,
                              store_wait_timeout_s=0.05, store_retry_deadline_s=0.5))
    c = Counter.create(obj_id=1)
    c.count = 1
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"(?i)WAIT.*0 of 1 replicas"):
        c.commit()
    assert time.monotonic() - t0 >= 0.4


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A server and its replica, of this test alone."""
    need_redis()
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica",
                          extra=["--replicaof", "127.0.0.1", str(primary.port)])
    try:
        replica.start()
        deadline = time.monotonic() + 30
        while "master_link_status:up" not in replica.cli("info", "replication"):
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.02)
        yield primary, replica
    finally:
        if replica.proc is not None and replica.proc.poll() is None:
            os.kill(replica.proc.pid, signal.SIGCONT)
        replica.stop()
        primary.stop()


def test_wait_holds_the_commit_until_the_replica_has_it(
        impl: str, primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    """With store_wait_replicas=1 a commit resolves only once the replica holds it: while
    the replica is stopped (SIGSTOP) the commit fails after the deadline (its write is on
    the primary: the next commit of the object conflicts); once the replica runs again,
    a commit resolves and the replica already has it."""
    primary, replica = primary_and_replica
    url = f"{primary.url}?prefix={fresh_prefix()}"
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl), store_wait_replicas=1,
                              store_wait_timeout_s=0.1, store_retry_deadline_s=1))
    c = Counter.create(obj_id=1, count=1)
    c.commit()
    key = f"{url.rpartition('=')[2]}:{{test.Counter/0/n:1}}"
    assert replica.cli("hget", key, "@version") == "1"
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        c.count = 2
        with pytest.raises(StorageError, match="replicas"):
            c.commit()
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    with pytest.raises(ConflictError):
        c.commit()
    c.refresh()
    c.count = 3
    c.commit()
    assert replica.cli("hget", key, "@version") == str(c._oaas_state.version)


def promoted(cluster: RedisCluster, key: str, victim: RedisServer) -> bool:
    """Whether a node other than ``victim`` serves ``key`` as a primary now."""
    try:
        return cluster.primary_of(key).port != victim.port
    except LookupError:  # the slot has no primary yet
        return False


def test_cluster_failover_with_wait_loses_no_acknowledged_commit(impl: str,
                                                                 tmp_path: Path) -> None:
    """A cluster with one replica per primary, store_wait_replicas=1: a primary is
    SIGKILLed mid-stream, its replica promoted; commits to its slots wait (retried) until
    the old primary has rejoined as the new one's replica. Every acknowledged commit is
    there afterwards, whole, and no writer ever meets ConflictError (which is what an
    acknowledged commit lost by the failover would cause)."""
    need_redis()
    cluster = RedisCluster(tmp_path / "c", replicas=1)
    try:
        cluster.start()
        url = f"{cluster.url}?prefix=fw"
        oaas.configure(OaasConfig(storage=url, native=native_flag(impl),
                                  store_retry_deadline_s=60, batch_max_delay_ms=1,
                                  durability="sync", store_wait_replicas=1,
                                  store_wait_timeout_s=0.5))
        n_obj, acked = 12, {}
        lock = threading.Lock()
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(oid: int) -> None:
            try:
                c = Counter.create(obj_id=oid)
                v = 0
                while not stop.is_set():
                    v += 1
                    c.count = v
                    c.label = str(v)
                    c.commit()
                    with lock:
                        acked[oid] = v
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_obj)]
        for t in threads:
            t.start()

        def wait_all_past(marks: dict[int, int], timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while True:
                with lock:
                    done = len(acked) == n_obj and all(acked[o] > marks.get(o, 0) + 10
                                                       for o in range(n_obj))
                if done:
                    return
                assert time.monotonic() < deadline and not errors, (errors, acked)
                time.sleep(0.02)

        try:
            wait_all_past({}, 60)
            victim = cluster.primary_of("fw:{test.Counter/0/n:0}")
            victim.kill()
            deadline = time.monotonic() + 30
            while not promoted(cluster, "fw:{test.Counter/0/n:0}", victim):
                assert time.monotonic() < deadline, "no replica was promoted"
                time.sleep(0.05)
            victim.start()  # rejoins as the promoted replica's replica
            with lock:
                marks = dict(acked)
            wait_all_past(marks, 90)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=90)
        assert not errors, errors
        oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
        for oid, v in acked.items():
            c = Counter.load(oid)
            assert c.count == v and c.label == str(v), (oid, v)
    finally:
        cluster.stop()
