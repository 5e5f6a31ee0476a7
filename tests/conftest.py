"""Shared fixtures: every behavioural test runs on both implementations and both stores.

``sdk`` configures the SDK for one (implementation, store) pair: implementation "python"
(``native="off"``) or "native" (``native="on"``), store "memory" or "lmdb" (a fresh
directory). With ``OAAS_REQUIRE_NATIVE=1`` (CI) a missing extension fails instead of skipping.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oaas_sdk import OaasConfig, native_available, oaas

from .redis_servers import RedisCluster, RedisServer, need_redis

# Tests never touch ./.oaas: the default store is memory unless a test names one.
os.environ.setdefault("OAAS_STORAGE", "memory")
# Servers started by tests bind this host only.
os.environ.setdefault("OAAS_SERVER_HOST", "127.0.0.1")

IMPLS = ["python", "native"]
STORES = ["memory", "lmdb", "redis", "cluster"]
_prefixes = itertools.count(1)


@dataclass
class Sdk:
    impl: str
    store: str
    path: Path | None
    url: str = ""  # the storage URL of the redis stores
    started: bool = False  # configured once: a memory store is this test's from then on

    def config(self, **over: object) -> OaasConfig:
        kw: dict[str, object] = {
            "native": "on" if self.impl == "native" else "off",
            "storage": ("memory" if self.store == "memory" else self.url
                        or f"lmdb:{self.path}"),
            "batch_max_delay_ms": 0.5,
        }
        kw.update(over)
        return OaasConfig(**kw)  # type: ignore[arg-type]

    def reconfigure(self, **over: object) -> None:
        """Start over as a new process would: empty identity map and cache, same store.

        The memory store object is carried over (it would vanish with a real process),
        except on the first call: the test starts with the store its configuration opens
        (with the native implementation, the native memory store and engine)."""
        from oaas_sdk import runtime
        from oaas_sdk.stores.memory import MemoryStore

        store = None
        rt = runtime.current()
        if self.store == "memory" and self.started and isinstance(rt.engine.store, MemoryStore):
            rt.flush()
            store = rt.engine.store
        runtime.configure(self.config(**over), store=store)
        self.started = True


def _need_impl(impl: str) -> None:
    if impl == "native" and not native_available():
        if os.environ.get("OAAS_REQUIRE_NATIVE") == "1":
            pytest.fail("the native extension is required (OAAS_REQUIRE_NATIVE=1) but missing")
        pytest.skip("native extension not built")


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    _need_impl(request.param)
    return str(request.param)


@pytest.fixture(params=[(i, s) for i in IMPLS for s in STORES],
                ids=[f"{i}-{s}" for i in IMPLS for s in STORES])
def sdk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sdk]:
    impl, store = request.param
    _need_impl(impl)
    s = Sdk(impl, store, tmp_path / "store" if store == "lmdb" else None)
    if store in ("redis", "cluster"):
        server = request.getfixturevalue("redis_server" if store == "redis" else
                                         "redis_cluster")
        s.url = f"{server.url}?prefix=t{next(_prefixes)}"
    s.reconfigure()
    yield s
    oaas.configure(OaasConfig(mock_mode=True, native="off"))


@pytest.fixture(params=["sync", "async"])
def durable_sdk(request: pytest.FixtureRequest, sdk: Sdk) -> Sdk:
    """``sdk`` with ``durability`` set to each of "sync" and "async"."""
    sdk.reconfigure(durability=request.param)
    return sdk


def stored_entries(object_id: int, cls_id: str = "test.Counter") -> dict[str, bytes]:
    """The entries the store holds for ``(cls_id, 0, object_id)`` once pending commits
    are flushed (fails the test when there is no such object)."""
    from oaas_sdk import runtime

    rt = runtime.current()
    rt.flush()
    stored = rt.engine.read((cls_id, 0, object_id))
    assert stored is not None
    return dict(stored.entries)


@pytest.fixture
def lmdb_sdk(impl: str, tmp_path: Path) -> Iterator[Sdk]:
    """Only the durable store, on both implementations."""
    s = Sdk(impl, "lmdb", tmp_path / "store")
    s.reconfigure()
    yield s
    oaas.configure(OaasConfig(mock_mode=True, native="off"))


@pytest.fixture
def mock_oaas() -> Iterator[None]:
    """oaas-sdk2-py style: mock mode."""
    oaas.configure(OaasConfig(mock_mode=True))
    yield
    oaas.configure(OaasConfig(mock_mode=True, native="off"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server on a free loopback port for the whole session (tests isolate
    themselves by key prefix)."""
    need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-primary Redis Cluster on free loopback ports for the whole session."""
    need_redis()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
