"""Entry cache (oaas_sdk.cache.EntryCache and the native one): same behaviour on both."""

from __future__ import annotations

import os
from typing import Any

import pytest

from oaas_sdk import native_available
from oaas_sdk.cache import EntryCache
from oaas_sdk.stores import StoredObject

KEY = ("test.Counter", 0, 7)
KEY_STR = ("test.Counter", 1, "alice")


def make(impl: str, max_bytes: int, ttl_s: float | None = None) -> Any:
    if impl == "python":
        return EntryCache(max_bytes, ttl_s)
    if not native_available():
        if os.environ.get("OAAS_REQUIRE_NATIVE") == "1":
            pytest.fail("the native extension is required (OAAS_REQUIRE_NATIVE=1)")
        pytest.skip("native extension not built")
    from oaas_sdk import _native

    return _native.EntryCache(max_bytes, ttl_s, StoredObject)


def rec(n: int = 10, version: int = 1) -> StoredObject:
    return StoredObject(version, 100, 200, {"count": b"\x05" * n, "name": b"\xa1x"})


def weight(obj: StoredObject, impl: str) -> int:
    """Bytes a record counts against the bound: the same weight in both implementations
    (tests/vectors/cache.json), so one ``cache_max_bytes`` holds the same objects."""
    del impl
    return EntryCache._weight(obj)


@pytest.fixture(params=["python", "native"])
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_get_put_counts_hits_and_misses(impl: str) -> None:
    c = make(impl, 1 << 20)
    assert c.get(KEY) is None
    r = rec()
    c.put(KEY, r)
    c.put(KEY_STR, rec(3))
    got = c.get(KEY)
    assert got == r and got is not r and got.entries is not r.entries
    assert (c.hits, c.misses, len(c)) == (1, 1, 2)
    assert c.nbytes == weight(r, impl) + weight(rec(3), impl)


def test_update_merges_deletes_and_inserts_new_objects_only(impl: str) -> None:
    c = make(impl, 1 << 20)
    c.update(KEY, 2, 300, {"count": b"\x06"})
    assert c.get(KEY) is None  # not cached and not new: nothing to merge into
    c.update(KEY, 1, 300, {"count": b"\x06"})
    assert c.get(KEY) == StoredObject(1, 300, 300, {"count": b"\x06"})
    c.update(KEY, 2, 400, {"name": b"\xa1y"}, ("count",))
    assert c.get(KEY) == StoredObject(2, 300, 400, {"name": b"\xa1y"})


def test_discard_and_clear(impl: str) -> None:
    c = make(impl, 1 << 20)
    c.put(KEY, rec())
    c.put(KEY_STR, rec())
    c.discard(KEY)
    assert c.get(KEY) is None and c.get(KEY_STR) is not None
    c.clear()
    assert len(c) == 0 and c.nbytes == 0 and c.get(KEY_STR) is None


def test_bound_by_bytes_evicts_least_recently_used(impl: str) -> None:
    w = weight(rec(100), impl)
    c = make(impl, 3 * w)
    for i in range(3):
        c.put(("test.C", 0, i), rec(100))
    c.get(("test.C", 0, 0))  # 0 is now the most recently used
    c.put(("test.C", 0, 3), rec(100))
    assert c.nbytes <= 3 * w
    assert c.evictions >= 1
    assert c.get(("test.C", 0, 0)) is not None
    assert c.get(("test.C", 0, 1)) is None


def test_records_heavier_than_the_bound_and_disabled_cache(impl: str) -> None:
    c = make(impl, 100)
    c.put(KEY, rec(1000))
    assert c.get(KEY) is None and c.nbytes == 0
    off = make(impl, 0)
    off.put(KEY, rec())
    assert off.get(KEY) is None and len(off) == 0


def test_zero_ttl_expires_at_once(impl: str) -> None:
    c = make(impl, 1 << 20, ttl_s=0.0)
    c.put(KEY, rec())
    assert c.get(KEY) is None
    forever = make(impl, 1 << 20, ttl_s=None)
    forever.put(KEY, rec())
    assert forever.get(KEY) is not None
