"""The codec and stores packages: old import paths, the backend switch, the key layout.

``oaas_sdk.codec`` (once one module) and ``oaas_sdk.stores`` (once one ``__init__``) are
packages split by job; these tests pin what callers rely on across the split: every old
name still imports, ``codec.set_backend`` switches every path at once, and the store key
layout (written once, in ``stores/layout.py``) gives the bytes of docs/format.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from oaas_sdk import codec
from oaas_sdk.stores import layout

# Module-level names of the single-module codec that tools, docs and tests used.
OLD_CODEC_NAMES = [
    "MAX_DEPTH", "ZERO_COPY_MIN", "FieldType", "backend", "decode", "decode_plain", "encode",
    "encode_fields", "encode_objects", "field_type", "set_backend", "set_default_ref_factory",
    "to_plain", "EXT_BIGINT", "EXT_TUPLE", "EXT_SET", "EXT_FROZENSET", "EXT_DATETIME",
    "EXT_DATE", "EXT_TIME", "EXT_TIMEDELTA", "EXT_UUID", "EXT_DECIMAL", "EXT_NDARRAY",
    "EXT_REF", "_cache", "_ref_factory", "_native_codec", "_plan_desc", "_decode_plan_desc",
    "_native_helpers", "_prep_any", "_conv_any", "_check", "_RawRef", "_Deferred",
    "_Mismatch", "_U64_MAX", "_MAX_NDIM", "_DTYPE_RE", "_default_ref_factory",
]


@pytest.fixture
def python_backend() -> Iterator[None]:
    codec.set_backend(None)
    yield
    codec.set_backend(None)


@pytest.mark.parametrize("name", OLD_CODEC_NAMES)
def test_old_codec_names_import(name: str) -> None:
    ns: dict[str, object] = {}
    exec(f"from oaas_sdk.codec import {name}", ns)
    assert name in ns


def test_unknown_codec_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        codec.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from oaas_sdk.codec import no_such_name", {})


def test_format_constants_have_one_home() -> None:
    from oaas_sdk.codec import format as fmt

    assert [getattr(codec, f"EXT_{n}") for n in (
        "BIGINT", "TUPLE", "SET", "FROZENSET", "DATETIME", "DATE", "TIME", "TIMEDELTA",
        "UUID", "DECIMAL", "NDARRAY", "REF")] == list(range(1, 13))
    assert codec.MAX_DEPTH is fmt.MAX_DEPTH and codec._U32_MAX is fmt._U32_MAX


def test_set_backend_switches_every_path(impl: str, python_backend: None) -> None:
    from oaas_sdk import _native
    from oaas_sdk.codec._active import ACTIVE

    value = {"t": (1, dt.date(2024, 2, 29)), "s": frozenset({3, 1})}
    codec.set_backend(_native if impl == "native" else None)
    assert codec.backend() == impl
    assert (ACTIVE.native is None) == (impl == "python")
    assert codec._native_codec is ACTIVE.native
    data = codec.encode(value)
    assert codec.decode(data) == value
    assert codec.decode_plain(data) == {"t": [1, "2024-02-29"], "s": [1, 3]}
    codec.set_backend(None)
    assert codec.backend() == "python" and ACTIVE.native is None
    assert codec.encode(value) == data  # identical bytes on both


def test_ref_factory_is_shared_state(python_backend: None) -> None:
    saved = codec._ref_factory
    try:
        codec.set_default_ref_factory(lambda c, p, o: f"{c}/{p}/{o}")
        assert codec.decode(codec.encode(_Ref())) == "m.C/2/7"
        assert codec._ref_factory("a", 0, 1) == "a/0/1"
        with pytest.raises(TypeError, match="callable"):
            codec.set_default_ref_factory(42)  # type: ignore[arg-type]
    finally:
        codec.set_default_ref_factory(saved)


class _Ref:
    __oaas_identity__ = ("m.C", 2, 7)


def test_lmdb_keys() -> None:
    okey = layout.object_key_bytes(("pkg.Cls", 3, 258))
    assert okey == b"pkg.Cls\x00\x00\x00\x00\x03\x01" + (258).to_bytes(8, "big")
    skey = layout.object_key_bytes(("pkg.Cls", 0, "ab:c"))
    assert skey == b"pkg.Cls\x00\x00\x00\x00\x00\x02ab:c"
    assert layout.entry_key_bytes(okey, "count") == okey + b"\x00count"
    assert layout.entry_key_bytes(okey, "count").startswith(layout.entries_prefix_bytes(okey))
    for key in (("pkg.Cls", 3, 258), ("pkg.Cls", 0, "ab:c")):
        raw = layout.object_key_bytes(key)
        assert raw.startswith(layout.class_prefix_bytes(key[0], key[1]))
        assert layout.class_id_bytes(raw) == b"pkg.Cls"
        assert layout.parse_object_key_bytes("pkg.Cls", raw) == key
        assert layout.FIRST_OBJECT_KEY <= raw < layout.after_class_bytes(b"pkg.Cls")
    assert layout.class_id_bytes(layout.FORMAT_KEY) == b""  # sorts before every object
    assert layout.FORMAT_KEY < layout.FIRST_OBJECT_KEY
    assert layout.after_class_bytes(b"pkg.Cls") < layout.class_prefix_bytes("pkg.Clt")


def test_meta_record() -> None:
    rec = layout.pack_meta(5, 1000, 2000)
    assert rec == b"\x01" + (5).to_bytes(8, "big") + (1000).to_bytes(8, "big") \
        + (2000).to_bytes(8, "big")
    assert layout.unpack_meta(rec) == (5, 1000, 2000)
    with pytest.raises(ValueError, match="bad metadata record"):
        layout.unpack_meta(rec[:-1])


def test_redis_keys() -> None:
    assert layout.redis_object_key("oaas", ("pkg.Cls", 3, 258)) == b"oaas:{pkg.Cls/3/n:258}"
    assert layout.redis_object_key("p", ("pkg.Cls", 0, "x")) == b"p:{pkg.Cls/0/s:x}"
    for key in (("pkg.Cls", 3, 258), ("pkg.Cls", 0, "x")):
        raw = layout.redis_object_key("oaas", key)
        assert layout.parse_redis_object_key("oaas", raw) == key
    assert layout.parse_redis_object_key("oaas", b"other:{a/0/n:1}") is None
    assert layout.redis_scan_pattern("oaas", "a*b", 2) == "oaas:{a\\*b/2/*"
    assert layout.redis_scan_pattern("oaas", None) == "oaas:{*"


def test_identity_check() -> None:
    layout.check_identity("pkg.Cls", 0, 2**64 - 1)
    for bad, part in ((("", 0, 1), "cls_id"), (("a", -1, 1), "partition_id"),
                      (("a", 0, 2**64), "object_id"), (("a", 0, "UPPER"), "object_id")):
        with pytest.raises(ValueError, match=part):
            layout.check_identity(*bad)
