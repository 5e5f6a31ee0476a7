"""The format data files in tests/vectors/ (shared with ``cargo test``, which checks the
Rust core against them: oprc-py/core/tests/vectors.rs) against the Python constants and
against both implementations' behaviour: codec constants, store key layout and metadata
records, the entry cache's weights. The codec's byte vectors themselves run in
tests/test_codec.py and tests/test_codec_parity.py (through tests/codec_vectors.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from oaas_sdk import codec, native_available
from oaas_sdk import stores as stores_mod
from oaas_sdk.cache import EntryCache
from oaas_sdk.config import ENGINE_DEFAULTS
from oaas_sdk.stores import StoredObject
from tests.codec_vectors import VECTORS, format_constants

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS_DIR / name).read_text(encoding="utf-8"))
    return doc


def _native() -> Any:
    if not native_available():
        if os.environ.get("OAAS_REQUIRE_NATIVE") == "1":
            pytest.fail("the native extension is required (OAAS_REQUIRE_NATIVE=1)")
        pytest.skip("native extension not built")
    from oaas_sdk import _native

    return _native


def test_codec_vectors_load_from_the_data_file() -> None:
    names = [v[0] for v in VECTORS]
    assert len(names) == len(set(names)) >= 90
    assert len(VECTORS) == len(_load("codec.json")["vectors"])


def test_codec_constants_match_the_data_file() -> None:
    c = format_constants()
    for name, code in c["ext_codes"].items():
        assert getattr(codec, f"EXT_{name.upper()}") == code, name
    ours = {k.removeprefix("EXT_").lower() for k in dir(codec) if k.startswith("EXT_")}
    assert ours == set(c["ext_codes"])
    assert codec.MAX_DEPTH == c["limits"]["max_depth"]
    max_ndim = getattr(codec, "_MAX_NDIM", None)
    if max_ndim is None:  # the codec package keeps its format constants in codec.format
        from oaas_sdk.codec import format as codec_format  # type: ignore[attr-defined]

        max_ndim = codec_format._MAX_NDIM
    assert max_ndim == c["limits"]["max_ndim"]


def test_layout_constants_match_the_data_file() -> None:
    from oaas_sdk.stores import lmdb as lmdb_store

    c = _load("layout.json")["constants"]
    assert stores_mod.META_FORMAT == c["meta_format"]
    assert len(stores_mod.pack_meta(1, 0, 0)) == c["meta_len"]
    assert lmdb_store.FORMAT_KEY == bytes.fromhex(c["format_key"])
    assert lmdb_store.FORMAT_VALUE == bytes.fromhex(c["format_value"])
    num = stores_mod.object_key_bytes(("c", 0, 1))
    txt = stores_mod.object_key_bytes(("c", 0, "a"))
    assert num[1] == txt[1] == c["key_sep"]
    assert (num[6], txt[6]) == (c["key_num_id"], c["key_str_id"])


def test_python_key_layout_matches_the_vectors() -> None:
    for k in _load("layout.json")["keys"]:
        key = stores_mod.object_key_bytes((k["cls_id"], k["partition_id"], k["object_id"]))
        assert key.hex() == k["object_key"], k
        assert stores_mod.entry_key_bytes(key, k["field"]).hex() == k["entry_key"], k


def test_python_redis_keys_match_the_vectors() -> None:
    from oaas_sdk.stores import layout

    prefix = _load("layout.json")["constants"]["redis_default_prefix"]
    assert layout.DEFAULT_REDIS_PREFIX == prefix
    for k in _load("layout.json")["keys"]:
        ident = (k["cls_id"], k["partition_id"], k["object_id"])
        assert layout.redis_object_key(prefix, ident).decode() == k["redis_key"], k
        assert layout.parse_redis_object_key(prefix, k["redis_key"].encode()) == ident, k


def test_python_meta_records_match_the_vectors() -> None:
    for m in _load("layout.json")["meta"]:
        record = stores_mod.pack_meta(m["version"], m["created_ms"], m["updated_ms"])
        assert record.hex() == m["record"], m
        assert stores_mod.unpack_meta(record) == (m["version"], m["created_ms"],
                                                  m["updated_ms"])


def test_native_key_layout_matches_the_vectors(tmp_path: Path) -> None:
    """The native engine writes each vector's object under the vector's key bytes."""
    native = _native()
    keys = _load("layout.json")["keys"]
    settings = {**ENGINE_DEFAULTS, "durability": "sync"}  # the native engine has no defaults
    engine = native.Engine(str(tmp_path / "store"), **settings)
    try:
        for k in keys:
            engine.submit(k["cls_id"], k["partition_id"], k["object_id"], 0,
                          {k["field"] or "f": b"\xc0"}, time_ms=1).wait(10)
        stored = {bytes(b).hex() for cls in {k["cls_id"] for k in keys}
                  for b in engine.scan(cls.encode() + b"\x00")}
    finally:
        engine.close()
    assert stored == {k["object_key"] for k in keys}


def _cases() -> list[tuple[dict[str, bytes], int]]:
    return [({n: bytes.fromhex(v) for n, v in case["entries"].items()}, case["weight"])
            for case in _load("cache.json")["cases"]]


def test_python_cache_weights_match_the_vectors() -> None:
    from oaas_sdk import cache as cache_mod

    c = _load("cache.json")["constants"]
    assert (cache_mod._OVERHEAD, cache_mod._ENTRY_OVERHEAD) == (c["object_overhead"],
                                                                c["entry_overhead"])
    for entries, weight in _cases():
        cache = EntryCache(1 << 30)
        cache.put(("t.C", 0, 1), StoredObject(1, 0, 0, dict(entries)))
        assert cache.nbytes == weight, entries


def test_native_cache_weights_match_the_vectors() -> None:
    native = _native()
    for entries, weight in _cases():
        cache = native.EntryCache(1 << 30, None, StoredObject)
        cache.put(("t.C", 0, 1), StoredObject(1, 0, 0, dict(entries)))
        assert cache.nbytes == weight, entries


@pytest.mark.parametrize("impl", ["python", "native"])
def test_one_bound_holds_the_same_objects(impl: str) -> None:
    """Equal weights: a bound of three records' weight keeps three of them, not four."""
    entries = {f"f{i}": b"x" * 100 for i in range(10)}
    w = next(weight for e, weight in _cases() if e == entries)
    cache: Any = (EntryCache(3 * w) if impl == "python"
                  else _native().EntryCache(3 * w, None, StoredObject))
    for i in range(4):
        cache.put(("t.C", 0, i), StoredObject(1, 0, 0, dict(entries)))
    assert len(cache) == 3 and cache.nbytes == 3 * w
