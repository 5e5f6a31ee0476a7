"""The Redis stores: URL syntax, key layout, several processes on one server, faults.

The behaviours every store shares (create/load/commit/reload, in-place changes, deletes,
conflicts in one process) run over Redis and Redis Cluster through the ``sdk`` fixture
(tests/conftest.py); this module covers what only shared stores have. Servers are the
session's own (tests/redis_servers.py) or started here; nothing else is touched.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oaas_sdk import ConfigError, ConflictError, OaasConfig, StorageError, oaas, runtime
from oaas_sdk.stores import WriteRecord, open_store, parse_storage_url

from .models import Counter
from .redis_servers import RedisCluster, RedisServer, free_port, need_redis

redis = pytest.importorskip("redis")

ROOT = Path(__file__).resolve().parent.parent
_prefix = itertools.count(1)


def fresh_prefix() -> str:
    return f"r{os.getpid()}x{next(_prefix)}"


@pytest.fixture(params=["redis", "cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """A storage URL with a fresh key prefix on the session's server or cluster."""
    server = request.getfixturevalue("redis_server" if request.param == "redis"
                                     else "redis_cluster")
    return f"{server.url}?prefix={fresh_prefix()}"


@pytest.fixture
def durable_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, with appendonly yes and appendfsync always."""
    need_redis()
    s = RedisServer(tmp_path / "redis", durable=True).start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _back_to_mock() -> Iterator[None]:
    yield
    oaas.configure(OaasConfig(mock_mode=True, native="off"))


def run_py(code: str, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter (another process); its stdout. Fails on error."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr
    return p.stdout


def native_flag(impl: str) -> str:
    return "on" if impl == "native" else "off"


# -- URLs -------------------------------------------------------------------------------
def test_url_kinds() -> None:
    assert parse_storage_url("redis://h:1/2") == ("redis", "redis://h:1/2")
    assert parse_storage_url("rediss://:pw@h:1/0")[0] == "redis"
    assert parse_storage_url("redis+cluster://a:1,b:2")[0] == "redis+cluster"
    assert parse_storage_url("rediss+cluster://a:1")[0] == "redis+cluster"
    with pytest.raises(ConfigError, match="not understood"):
        OaasConfig(storage="redis-cluster://a:1")


def test_bad_options_are_named(redis_server: RedisServer) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        open_store(f"{redis_server.url}?prefix=a*b")
    with pytest.raises(ConfigError, match="only database 0"):
        open_store("redis+cluster://127.0.0.1:1/3", retry_deadline_s=0)
    with pytest.raises(ConfigError, match="host:port"):
        open_store("redis+cluster://127.0.0.1", retry_deadline_s=0)


def test_password_in_url_and_never_in_messages(tmp_path: Path) -> None:
    need_redis()
    s = RedisServer(tmp_path / "auth", extra=["--requirepass", "s3cret"]).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageError, match="AuthenticationError") as e:
            open_store(f"redis://:wrong@127.0.0.1:{s.port}/0", retry_deadline_s=30)
        assert time.monotonic() - t0 < 5  # not retried: waiting cannot fix a password
        assert "wrong" not in str(e.value)
        store = open_store(f"redis://:s3cret@127.0.0.1:{s.port}/1?prefix=p")
        assert "s3cret" not in store.name and str(s.port) in store.name
        assert store.write_batch([WriteRecord(("a.B", 0, 1), 0, {"x": b"\x01"})]) == [None]
        assert store.read(("a.B", 0, 1)).entries == {"x": b"\x01"}  # type: ignore[union-attr]
        store.close()
        assert s.cli("-a", "s3cret", "-n", "1", "exists", "p:{a.B/0/n:1}").endswith("1")
    finally:
        s.stop()


def test_password_on_the_native_store(impl: str, tmp_path: Path) -> None:
    """redis://:password@ on either implementation's engine: a wrong password fails at
    once (not retried) and shows nowhere; the right one commits."""
    need_redis()
    s = RedisServer(tmp_path / "auth", extra=["--requirepass", "n4tive"]).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageError) as e:
            oaas.configure(OaasConfig(storage=f"redis://:wrong@127.0.0.1:{s.port}/0",
                                      native=native_flag(impl), store_retry_deadline_s=30))
            Counter.create(obj_id=1).commit()
        assert time.monotonic() - t0 < 5
        assert "wrong" not in str(e.value)
        url = f"redis://:n4tive@127.0.0.1:{s.port}/2?prefix=pw"
        oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
        Counter.create(obj_id=1, count=5).commit()
        assert "n4tive" not in runtime.current().engine.store.name
        assert "n4tive" not in oaas.stats()["store"]
        assert s.cli("-a", "n4tive", "-n", "2", "hget", "pw:{test.Counter/0/n:1}",
                     "@version").endswith("1")
    finally:
        oaas.configure(OaasConfig(mock_mode=True, native="off"))
        s.stop()


def test_cluster_with_a_password(impl: str, tmp_path: Path) -> None:
    """redis+cluster://:password@...: every node is reached with the password, and the
    password shows nowhere (store name, oaas.stats())."""
    need_redis()
    cluster = RedisCluster(tmp_path / "c", password="cl-pw")
    try:
        cluster.start()
        url = f"{cluster.url}?prefix=auth"
        assert url.startswith("redis+cluster://:cl-pw@")
        oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
        for i in range(20):  # spread over the three primaries
            Counter.create(obj_id=i, count=i).commit()
        assert "cl-pw" not in oaas.stats()["store"] and ":***@" in oaas.stats()["store"]
        assert "cl-pw" not in runtime.current().engine.store.name
        oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
        assert [Counter.load(i).count for i in range(20)] == list(range(20))
        held = [int(n.cli("dbsize")) for n in cluster.nodes]
        assert sum(held) == 20 and min(held) > 0
    finally:
        cluster.stop()


def _certificates(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl); (ca, cert, key)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    # The extensions Python 3.13's strict verification (VERIFY_X509_STRICT) requires.
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.crt", "-days", "1", "-subj", "/CN=oaas-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
        "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext")
    return d / "ca.crt", d / "server.crt", d / "server.key"


def test_tls_url(impl: str, tmp_path: Path) -> None:
    """rediss:// with a password: the commit travels over TLS, verified against the CA."""
    need_redis()
    ca, cert, key = _certificates(tmp_path / "tls")
    tls_port = free_port()
    s = RedisServer(tmp_path / "redis", extra=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file",
        str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
        "--requirepass", "pw"]).start()
    try:
        url = f"rediss://:pw@127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}&prefix=tls"
        oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
        c = Counter.create(obj_id=1, count=41)
        c.commit()
        from oaas_sdk.engine import NativeEngine

        # ssl_ca_certs is understood natively: the native implementation runs its store
        assert isinstance(runtime.current().engine, NativeEngine) == (impl == "native")
        oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
        assert Counter.load(1).count == 41
        assert s.cli("-a", "pw", "hget", "tls:{test.Counter/0/n:1}", "@version").endswith("1")
        with pytest.raises(StorageError):  # plain text against the TLS port
            open_store(f"redis://:pw@127.0.0.1:{tls_port}/0", retry_deadline_s=0)
    finally:
        s.stop()


def test_a_certificate_the_ca_does_not_vouch_for_fails_at_once(impl: str,
                                                               tmp_path: Path) -> None:
    """Verification failures are not retried until the deadline: retrying cannot help."""
    need_redis()
    _, cert, key = _certificates(tmp_path / "tls")
    other_ca, _, _ = _certificates(tmp_path / "other")
    tls_port = free_port()
    s = RedisServer(tmp_path / "redis", extra=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file",
        str(key), "--tls-ca-cert-file", str(other_ca), "--tls-auth-clients", "no"]).start()
    try:
        t0 = time.monotonic()
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={other_ca}"
        if impl == "python":
            with pytest.raises(StorageError, match="CERTIFICATE_VERIFY_FAILED"):
                open_store(url, retry_deadline_s=30)
        else:  # rustls words it its own way
            with pytest.raises(StorageError, match="(?i)certificate"):
                oaas.configure(OaasConfig(storage=url, native="on",
                                          store_retry_deadline_s=30))
                Counter.create(obj_id=1).commit()
        assert time.monotonic() - t0 < 10
    finally:
        s.stop()


def test_unreachable_server_is_a_storage_error_after_the_deadline() -> None:
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="store_retry_deadline_s"):
        open_store(f"redis://127.0.0.1:{free_port()}/0", retry_deadline_s=0.3)
    assert 0.25 < time.monotonic() - t0 < 5


# -- layout -----------------------------------------------------------------------------
def test_layout_one_hash_per_object(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    store = open_store(f"{redis_server.url}?prefix={prefix}")
    try:
        assert store.write_batch([
            WriteRecord(("pkg.Cls", 3, 7), 0, {"a": b"\x01", "b": b"\x02"}, time_ms=1000),
            WriteRecord(("pkg.Cls", 3, 7), 1, {"a": b"\x03"}, deletes=("b",), time_ms=2000),
            WriteRecord(("pkg.Cls", 0, "x:y"), 0, {}, time_ms=5),
        ]) == [None, None, None]
        r = redis.Redis(port=redis_server.port)
        assert r.hgetall(f"{prefix}:{{pkg.Cls/3/n:7}}") == {
            b"a": b"\x03", b"@version": b"2", b"@created": b"1000", b"@updated": b"2000",
            b"@commit": r.hget(f"{prefix}:{{pkg.Cls/3/n:7}}", "@commit")}
        assert len(r.hget(f"{prefix}:{{pkg.Cls/3/n:7}}", "@commit")) == 16
        assert r.exists(f"{prefix}:{{pkg.Cls/0/s:x:y}}")
        got = store.read(("pkg.Cls", 3, 7))
        assert got is not None and (got.version, got.created_ms, got.updated_ms,
                                    got.entries) == (2, 1000, 2000, {"a": b"\x03"})
        # a string id of digits is another object than the numeric id
        assert store.read(("pkg.Cls", 3, "7")) is None
    finally:
        store.close()


@pytest.mark.parametrize("kind,options", [("redis", ""), ("redis", "&socket_timeout=5"),
                                          ("cluster", ""), ("cluster", "&socket_timeout=5")])
def test_which_engine_and_store_run(impl: str, kind: str, options: str,
                                    request: pytest.FixtureRequest) -> None:
    """The native implementation runs the native engine and store on one server and on
    a cluster (a URL whose only option is ``prefix``); redis-py options and TLS keep the
    Python engine over the Python store."""
    from oaas_sdk.engine import NativeEngine, PythonEngine
    from oaas_sdk.stores.redis import RedisStore

    server = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster")
    oaas.configure(OaasConfig(storage=f"{server.url}?prefix={fresh_prefix()}{options}",
                              native=native_flag(impl)))
    c = Counter.create(obj_id=1, count=3)
    c.commit()
    eng = runtime.current().engine
    if impl == "native" and not options:
        assert isinstance(eng, NativeEngine)
        assert eng.store.name.startswith("redis store at redis")
    else:
        assert isinstance(eng, PythonEngine) and isinstance(eng.store, RedisStore)
    found = eng.read((Counter._oaas_cls_id, 0, 1))
    assert found is not None and found.version == 1


@pytest.mark.parametrize("writer", ["native", "python"])
def test_each_implementation_reads_what_the_other_wrote(
        writer: str, redis_server: RedisServer) -> None:
    """Same keys and bytes: the hashes one implementation writes equal the other's, field
    for field (but the commit token), and each loads the other's objects."""
    from oaas_sdk._backend import native_available

    if not native_available():
        pytest.skip("native extension not built")
    reader = "python" if writer == "native" else "native"
    r = redis.Redis(port=redis_server.port)
    hashes = {}
    for impl in ("native", "python"):
        prefix = fresh_prefix()
        oaas.configure(OaasConfig(storage=f"{redis_server.url}?prefix={prefix}",
                                  native=native_flag(impl)))
        c = Counter.create(obj_id=5, count=7, label="x")
        c.commit()
        c.history.append("h")
        c.count = 8
        c.commit()
        raw = r.hgetall(f"{prefix}:{{{Counter._oaas_cls_id}/0/n:5}}")
        assert raw, prefix
        hashes[impl] = ({k: v for k, v in raw.items()
                         if k not in (b"@created", b"@updated", b"@commit")}, prefix)
    assert hashes["native"][0] == hashes["python"][0]
    assert hashes["native"][0][b"@version"] == b"2"
    oaas.configure(OaasConfig(storage=f"{redis_server.url}?prefix={hashes[writer][1]}",
                              native=native_flag(reader)))
    d = Counter.load(5)
    assert (d.count, d.label, d.history, d._oaas_state.version) == (8, "x", ["h"], 2)
    d.count = 9
    d.commit()  # the reader writes on: the versions line up
    oaas.configure(OaasConfig(storage=f"{redis_server.url}?prefix={hashes[writer][1]}",
                              native=native_flag(writer)))
    assert Counter.load(5).count == 9


def test_cluster_keeps_an_object_in_one_slot(redis_cluster: RedisCluster) -> None:
    prefix = fresh_prefix()
    store = open_store(f"{redis_cluster.url}?prefix={prefix}")
    keys = [("pkg.Slot", p, o) for p in range(3) for o in (1, 2, "s-1", 10**18)]
    try:
        assert store.write_batch([WriteRecord(k, 0, {"f": b"\x00"}) for k in keys]) == \
            [None] * len(keys)
        owners = set()
        for cls_id, pid, oid in keys:
            kind = "n" if isinstance(oid, int) else "s"
            key = f"{prefix}:{{{cls_id}/{pid}/{kind}:{oid}}}"
            node = redis_cluster.nodes[0]
            slot = int(node.cli("cluster", "keyslot", key))
            assert slot == int(node.cli("cluster", "keyslot", f"{cls_id}/{pid}/{kind}:{oid}"))
            holders = [n for n in redis_cluster.nodes if n.cli("exists", key) == "1"]
            assert len(holders) == 1  # the hash (all of the object) on the slot's owner
            assert int(holders[0].cli("cluster", "countkeysinslot", str(slot))) >= 1
            owners.add(holders[0].port)
        assert len(owners) > 1  # objects do spread over the primaries
        assert sorted(store.scan("pkg.Slot"), key=repr) == sorted(keys, key=repr)
    finally:
        store.close()


def test_scan_and_classes(shared_url: str) -> None:
    store = open_store(shared_url)
    try:
        recs = [WriteRecord(("a.One", p, o), 0, {}) for p in (0, 1) for o in range(30)]
        recs += [WriteRecord(("a.Two", 0, "only"), 0, {}), WriteRecord(("a.On", 0, 1), 0, {})]
        assert store.write_batch(recs) == [None] * len(recs)
        assert sorted(store.scan("a.One"), key=repr) == sorted(
            (("a.One", p, o) for p in (0, 1) for o in range(30)), key=repr)
        assert sorted(store.scan("a.One", 1)) == [("a.One", 1, o) for o in range(30)]
        assert list(store.scan("a.Two")) == [("a.Two", 0, "only")]
        assert list(store.scan("a.Two", 5)) == []
        assert store.classes() == ["a.On", "a.One", "a.Two"]
        assert store.write_batch([WriteRecord(("a.Two", 0, "only"), 1,
                                              delete_object=True)]) == [None]
        assert store.classes() == ["a.On", "a.One"]
    finally:
        store.close()


# -- commits ----------------------------------------------------------------------------
def test_batch_semantics_match_lmdb(shared_url: str, tmp_path: Path) -> None:
    """The same batch gives the same results and state on Redis as on LMDB."""
    k, k2 = ("b.C", 0, 1), ("b.C", 0, "two")
    batch = [
        WriteRecord(k, 0, {"a": b"1", "b": b"2"}, time_ms=10),
        WriteRecord(k, 0, {"a": b"x"}, time_ms=11),  # conflict: exists
        WriteRecord(k, 1, {"a": b"3"}, deletes=("b", "nope"), time_ms=12),
        WriteRecord(k2, 5, {"a": b"x"}),  # conflict: does not exist
        WriteRecord(k2, 0, {"z": b""}, time_ms=13),
        # (LMDB dates a re-create in the same batch by the delete's time: equal here)
        WriteRecord(k2, 1, delete_object=True, time_ms=14),
        WriteRecord(k2, 0, {"y": b"9"}, time_ms=14),  # created again
        WriteRecord(("b.C", 0, 3), 0, delete_object=True),  # delete of nothing: no-op
    ]
    results = {}
    for url in (shared_url, f"lmdb:{tmp_path / 'l'}"):
        store = open_store(url)
        try:
            res = store.write_batch(batch)
            results[url] = ([None if e is None else str(e) for e in res],
                            [store.read(x) for x in (k, k2, ("b.C", 0, 3))])
        finally:
            store.close()
    redis_res, lmdb_res = results.values()
    assert redis_res == lmdb_res
    assert redis_res[0][1] is not None and "already exists" in redis_res[0][1]


def test_resent_commit_is_not_applied_twice(shared_url: str) -> None:
    """A commit sent again after a lost answer is recognised by its token (script) and a
    read-back finds which commits of a broken exchange landed (store)."""
    from oaas_sdk.stores.redis import RedisStore

    store = open_store(shared_url)
    assert isinstance(store, RedisStore)
    try:
        k = ("c.R", 0, 1)
        recs = [WriteRecord(k, 0, {"a": b"1"}), WriteRecord(k, 1, {"a": b"2"}),
                WriteRecord(("c.R", 0, 2), 0, {"a": b"1"})]
        tokens = ["t1", "t2", "t3"]
        results: list[Exception | None] = [None] * 3
        client = store._connected()
        assert store._send(client, recs, tokens, [0, 1], results) == []
        # 0 and 1 landed, 2 was never sent
        assert store._landed(client, recs, tokens, [0, 1, 2]) == [2]
        # sent again: the script knows its token
        assert store._send(client, recs, tokens, [1], results) == []
        assert results == [None, None, None]
        assert store.read(k).version == 2  # type: ignore[union-attr]
        store._send(client, recs, ["other", "other", "t3"], [1], results)
        assert isinstance(results[1], ConflictError)
    finally:
        store.close()


# -- several processes ------------------------------------------------------------------
def test_processes_see_each_others_commits_and_stale_writers_conflict(
        impl: str, shared_url: str) -> None:
    cfg = dict(storage=shared_url, native=native_flag(impl))
    oaas.configure(OaasConfig(**cfg))  # type: ignore[arg-type]
    c = Counter.create(obj_id=5, count=1)
    c.commit()
    out = run_py(f"""
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(**{cfg!r}))
        c = Counter.load(5)
        print(c.count)
        c.count = 2
        c.history.append("other")
        c.commit()
        """)
    assert out.split() == ["1"]
    c.count = 100  # stale: the other process committed version 2
    with pytest.raises(ConflictError, match="another writer committed version 2"):
        c.commit()
    assert c.count == 100  # kept
    c.refresh()
    assert (c.count, c.history, c._oaas_state.version) == (2, ["other"], 2)
    c.count = 3
    c.commit()
    assert run_py(f"""
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(**{cfg!r}))
        print(Counter.load(5).count, Counter.load(5)._oaas_state.version)
        """).split() == ["3", "3"]


@pytest.mark.parametrize("ttl", [None, 0.3])
def test_entry_cache_of_a_shared_store_never_serves_stale_data_for_long(
        impl: str, redis_server: RedisServer, ttl: float | None) -> None:
    """Without cache_ttl_s nothing is cached (every load of a dropped object reads the
    server); with it, another process's commit is seen once the TTL has passed."""
    url = f"{redis_server.url}?prefix={fresh_prefix()}"
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl), cache_ttl_s=ttl))
    c = Counter.create(obj_id=8, count=1)
    c.commit()
    del c
    assert Counter.load(8).count == 1  # dropped again at once: a cache candidate
    rt = runtime.current()
    assert rt.cache_enabled is (ttl is not None)
    run_py(f"""
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(storage={url!r}))
        c = Counter.load(8); c.count = 2; c.commit()
        """)
    if ttl is None:
        assert Counter.load(8).count == 2
        assert len(rt.cache) == 0
        return
    deadline = time.monotonic() + 10
    while Counter.load(8).count != 2:  # served from the cache until the TTL expires
        assert time.monotonic() < deadline, "the cached entry never expired"
        time.sleep(0.05)


def test_created_ids_are_unique_across_processes(shared_url: str) -> None:
    """Four processes create objects without ids at the same time: no id is shared,
    no create conflicts."""
    code = f"""
        import asyncio
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(storage={shared_url!r}, durability="async"))
        ids = []
        for i in range(2000):
            c = Counter.create(count=i)
            ids.append(c.object_id)
            c.commit()
        oaas.flush()
        assert oaas.stats()["failed_commits"] == 0, oaas.stats()
        print(" ".join(map(str, ids)))
        """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=str(ROOT))
             for _ in range(4)]
    ids: list[int] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ids += map(int, out.split())
    assert len(ids) == 8000 and len(set(ids)) == 8000
    store = open_store(shared_url)
    try:
        assert len(list(store.scan("test.Counter"))) == 8000
    finally:
        store.close()


def test_object_id_layout_and_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    from oaas_sdk.model import registry as obj

    fixed = (obj._EPOCH_MS + 123_456) * 1_000_000
    monkeypatch.setattr(obj, "_time_ns", lambda: fixed)
    obj._reseed_ids()
    ids = [obj.new_object_id() for _ in range(3000)]  # more than one ms can hold
    assert ids == sorted(set(ids)) and max(ids) < 2**63
    assert ids[0] >> 22 == 123_456 and ids[-1] >> 22 > 123_456  # borrowed later ms
    assert {(i >> 10) & 4095 for i in ids} == {obj._ids.node}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports the first id it makes
        os.write(w, str(obj.new_object_id()).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child = int(os.read(r, 64))
    os.close(r)
    mine = obj.new_object_id()
    # the child drew its own node and sequence: without that it would have made `mine`
    assert child != mine
    monkeypatch.undo()
    obj._reseed_ids()


# -- faults -----------------------------------------------------------------------------
def test_commit_while_the_server_is_down_fails_keeps_changes_then_succeeds(
        impl: str, durable_server: RedisServer) -> None:
    url = f"{durable_server.url}?prefix={fresh_prefix()}"
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl),
                              store_retry_deadline_s=0.5))
    c = Counter.create(obj_id=1, count=1)
    c.commit()
    durable_server.stop()
    c.count = 2
    c.history.append("while down")
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="store_retry_deadline_s"):
        c.commit()
    assert time.monotonic() - t0 < 10
    assert (c.count, c.history, c._oaas_state.version) == (2, ["while down"], 1)  # still dirty
    durable_server.start()
    c.commit()
    assert c._oaas_state.version == 2
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
    d = Counter.load(1)
    assert (d.count, d.history, d._oaas_state.version) == (2, ["while down"], 2)


def test_commit_waits_out_a_restart_within_the_deadline(
        impl: str, durable_server: RedisServer) -> None:
    url = f"{durable_server.url}?prefix={fresh_prefix()}"
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl),
                              store_retry_deadline_s=20))
    c = Counter.create(obj_id=1, count=1)
    c.commit()
    durable_server.stop()
    restarter = threading.Timer(0.5, durable_server.start)
    restarter.start()
    c.count = 2
    c.commit()  # retried until the server is back
    restarter.join()
    assert c._oaas_state.version == 2
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
    assert Counter.load(1).count == 2


@pytest.fixture(params=["redis", "cluster"])
def durable_target(request: pytest.FixtureRequest,
                   tmp_path: Path) -> Iterator[tuple[str, RedisServer]]:
    """(URL, the server to kill): a durable server, or a durable 3-primary cluster and
    its first primary, of this test alone."""
    need_redis()
    if request.param == "redis":
        s = RedisServer(tmp_path / "redis", durable=True).start()
        yield f"{s.url}?prefix=k", s
        s.stop()
    else:
        c = RedisCluster(tmp_path / "cluster", durable=True)
        try:
            c.start()
            yield f"{c.url}?prefix=k", c.nodes[0]
        finally:
            c.stop()


def test_sigkill_of_the_server_mid_stream_loses_no_acknowledged_commit(
        impl: str, durable_target: tuple[str, RedisServer]) -> None:
    """Writers commit two equal fields per commit while the server (a cluster's primary)
    is SIGKILLed and restarted (appendfsync always). Every acknowledged commit is there
    afterwards and no commit is half written."""
    url, server = durable_target
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl),
                              store_retry_deadline_s=30, batch_max_delay_ms=1))
    n_obj, acked = 16, {}
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

    def total() -> int:
        with lock:
            return sum(acked.values())

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 40
        while total() < n:
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.01)

    try:
        wait_for(200)
        for _ in range(2):
            server.kill()
            before = total()
            server.start()
            wait_for(before + 200)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
    assert len(acked) == n_obj
    for oid, v in acked.items():
        c = Counter.load(oid)
        assert c.count == v and c.label == str(v) and c._oaas_state.version == v, (oid, v)


def test_benchmark_runs_and_reports_every_point(tmp_path: Path) -> None:
    """``python -m benchmarks.redis`` (small): every point measured, positive."""
    need_redis()
    out = tmp_path / "redis.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.redis", "--objects", "300",
                        "--repeats", "1", "--requests", "2000", "--ycsb-records", "100",
                        "--ycsb-operations", "200", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT),
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr
    import json

    med = json.loads(out.read_text())["median_per_s"]
    points = {"redis_benchmark_set_P16", "redis_benchmark_script_P16",
              "redis_benchmark_batch16_P16", "store_batch16", "store_batch256",
              "sdk_insert_python", "sdk_update_python", "ycsb_A_cluster_python",
              "ycsb_B_cluster_python"}
    from oaas_sdk._backend import native_available

    if native_available():
        points |= {"native_store_batch16", "native_store_batch256", "sdk_insert_native",
                   "sdk_update_native", "ycsb_A_cluster_native", "ycsb_B_cluster_native"}
    assert points <= set(med) and all(med[k] > 0 for k in points)


@pytest.mark.parametrize("kind", ["memory", "lmdb", "redis"])
def test_classes_on_every_store(kind: str, tmp_path: Path,
                                request: pytest.FixtureRequest) -> None:
    """``Store.classes()``: sorted ids of the classes with stored objects, on each store."""
    url = {"memory": "memory", "lmdb": f"lmdb:{tmp_path / 's'}"}.get(kind)
    if url is None:
        url = f"{request.getfixturevalue('redis_server').url}?prefix={fresh_prefix()}"
    store = open_store(url)
    try:
        assert store.classes() == []
        recs = [WriteRecord((c, p, o), 0, {"f": b"\x00"})
                for c in ("b.Z", "a.A", "a.A0", "a.B") for p in (0, 7) for o in (1, "x")]
        assert store.write_batch(recs) == [None] * len(recs)
        assert store.classes() == ["a.A", "a.A0", "a.B", "b.Z"]
        gone = [WriteRecord(("a.A0", p, o), 1, delete_object=True)
                for p in (0, 7) for o in (1, "x")]
        assert store.write_batch(gone) == [None] * 4
        assert store.classes() == ["a.A", "a.B", "b.Z"]
    finally:
        store.close()


def test_cluster_failover_to_a_replica_keeps_commits_flowing(impl: str,
                                                            tmp_path: Path) -> None:
    """A primary of a cluster with replicas is SIGKILLed and stays down: its replica takes
    over and the writers' commits go on within store_retry_deadline_s. Redis replicates
    asynchronously, so a commit acknowledged just before the kill may miss the replica: the
    writer then meets ConflictError, refreshes and goes on; every object ends with its last
    acknowledged commit, whole."""
    need_redis()
    cluster = RedisCluster(tmp_path / "c", replicas=1)
    try:
        cluster.start()
        url = f"{cluster.url}?prefix=fo"
        oaas.configure(OaasConfig(storage=url, native=native_flag(impl), store_retry_deadline_s=40,
                                  batch_max_delay_ms=1))
        n_obj, acked, conflicts = 12, {}, [0]
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
                    try:
                        c.commit()
                    except ConflictError:
                        with lock:
                            conflicts[0] += 1
                        c.refresh()
                        v = c.count
                        continue
                    with lock:
                        acked[oid] = v
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_obj)]
        for t in threads:
            t.start()

        def wait_all_past(marks: dict[int, int]) -> None:
            deadline = time.monotonic() + 60
            while True:
                with lock:
                    done = len(acked) == n_obj and all(acked[o] > marks.get(o, 0) + 20
                                                       for o in range(n_obj))
                if done:
                    return
                assert time.monotonic() < deadline and not errors, (errors, acked)
                time.sleep(0.02)

        try:
            wait_all_past({})
            victim = cluster.primary_of("fo:{test.Counter/0/n:0}")
            victim.kill()
            with lock:
                marks = dict(acked)
            wait_all_past(marks)  # every writer, object 0's primary included, goes on
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert not errors, errors
        oaas.configure(OaasConfig(storage=url, native=native_flag(impl)))
        for oid, v in acked.items():
            c = Counter.load(oid)
            assert c.count == v and c.label == str(v), (oid, v)
    finally:
        cluster.stop()
