"""Parity of the two codec implementations (docs/format.md, "State codec").

Byte for byte: every fixed vector and random values of every supported type encode to the
same bytes on the pure-Python and the native codec, and each decodes the other's output to
an equal value. Random and mutated input is accepted or refused alike by both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from oaas_sdk import codec, native_available
from oaas_sdk.errors import SerializationError
from tests.codec_vectors import VECTORS
from tests.test_codec import (
    _DECODE_HINTS,
    _PLAIN_ANY,
    _VALID,
    FAST,
    HINTED,
    mutations,
    same,
    vector_case,
)

if not native_available():
    if os.environ.get("OAAS_REQUIRE_NATIVE") == "1":
        raise RuntimeError("the native extension is required (OAAS_REQUIRE_NATIVE=1)")
    pytest.skip("native extension not built", allow_module_level=True)

from oaas_sdk import _native  # noqa: E402


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    saved = codec._ref_factory
    codec.set_default_ref_factory(lambda c, p, o: (c, p, o))
    yield
    codec.set_default_ref_factory(saved)
    codec.set_backend(None)


def on(impl: str, fn: Callable[[], Any]) -> Any:
    codec.set_backend(_native if impl == "native" else None)
    try:
        return fn()
    finally:
        codec.set_backend(None)


def both_encode(value: Any, hint: Any) -> bytes:
    py = on("python", lambda: codec.encode(value, hint))
    nat = on("native", lambda: codec.encode(value, hint))
    assert py == nat, (hint, value, py.hex(), nat.hex())
    return py


def cross_decode(data: bytes, hint: Any, value: Any) -> None:
    for impl in ("python", "native"):
        got = on(impl, lambda: codec.decode(data, hint))
        assert same(got, value), (impl, hint, value, got)


@pytest.mark.parametrize(
    ("name", "hint", "value", "hex_bytes"), VECTORS, ids=[v[0] for v in VECTORS]
)
def test_vector_is_identical_on_both(name: str, hint: Any, value: Any, hex_bytes: str) -> None:
    hint, value = vector_case(hint, value)
    assert both_encode(value, hint).hex() == hex_bytes
    cross_decode(bytes.fromhex(hex_bytes), hint, value)


@FAST
@given(st.data())
def test_random_hinted_values_are_identical_on_both(data: st.DataObject) -> None:
    hint, values = data.draw(HINTED)
    value = data.draw(values)
    b = both_encode(value, hint)
    cross_decode(b, hint, value)


@FAST
@given(_PLAIN_ANY)
def test_random_any_values_are_identical_on_both(value: Any) -> None:
    b = both_encode(value, Any)
    cross_decode(b, Any, value)


def _outcome(impl: str, data: bytes, hint: Any) -> tuple[bool, Any]:
    try:
        return True, on(impl, lambda: codec.decode(data, hint))
    except SerializationError:
        return False, None


def _agree(data: bytes, hint: Any) -> None:
    ok_py, v_py = _outcome("python", data, hint)
    ok_nat, v_nat = _outcome("native", data, hint)
    assert ok_py == ok_nat, (data.hex(), hint, v_py, v_nat)
    if ok_py:
        assert same(v_py, v_nat), (data.hex(), hint, v_py, v_nat)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(_DECODE_HINTS))
def test_random_bytes_are_accepted_or_refused_alike(data: bytes, hint: Any) -> None:
    _agree(data, hint)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(_VALID),
    st.integers(0, 10_000),
    st.integers(0, 255),
    st.sampled_from(_DECODE_HINTS),
)
def test_mutated_encodings_are_accepted_or_refused_alike(
    data: bytes, pos: int, byte: int, hint: Any
) -> None:
    for mutated in mutations(data, pos, byte):
        _agree(mutated, hint)


def test_encode_objects_encodes_each_field_with_field_names_in_errors() -> None:
    types = {
        "a": codec.field_type(int),
        "b": codec.field_type(list[str]),
        "c": codec.field_type(Any),
    }
    objs = [({"a": 1, "b": ["x"], "c": {"k": (1, 2)}}, types), ({"a": 2**70}, types)]
    for impl in ("python", "native"):
        got = on(impl, lambda: codec.encode_objects(objs))
        assert got == [
            {"a": b"\x01", "b": bytes.fromhex("91a178"), "c": bytes.fromhex("81a16bc70302920102")},
            {"a": codec.encode(2**70)},
        ]
        with pytest.raises(SerializationError, match=r"^b: "):
            on(impl, lambda: codec.encode_fields({"a": 1, "b": [1]}, types))
        with pytest.raises(TypeError, match=r"^c: .*'object'"):
            on(impl, lambda: codec.encode_fields({"a": 1, "c": [object()]}, types))


class _PItem(BaseModel):
    a: int
    b: list[str]
    c: Any = None


def _error_of(impl: str, fn: Callable[[], Any]) -> tuple[type, str]:
    try:
        on(impl, fn)
    except Exception as e:  # noqa: BLE001 - the type and message are compared
        return type(e), str(e)
    raise AssertionError("no error")


def test_field_type_methods_become_native_and_follow_the_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ft = codec.field_type(list[int])
    assert on("native", lambda: ft.encode([1])) == b"\x91\x01"
    assert type(ft.encode).__name__ == "builtin_function_or_method"
    # While the Python backend is active, the native coder hands calls to Python.
    monkeypatch.setattr(codec.FieldType, "_encode_slow", lambda self, v: b"py")
    monkeypatch.setattr(codec.FieldType, "_decode_slow", lambda self, d, zero_copy=False: "py")
    assert on("python", lambda: ft.encode([1])) == b"py"
    assert on("python", lambda: ft.decode(b"\x91\x01")) == "py"
    assert on("native", lambda: ft.encode([1])) == b"\x91\x01"
    assert on("native", lambda: ft.decode(b"\x91\x01")) == [1]


def test_native_methods_take_every_call_form_python_takes() -> None:
    ft = codec.field_type(int)
    for impl in ("python", "native"):
        assert on(impl, lambda: ft.decode(data=b"\x05")) == 5
        assert on(impl, lambda: ft.decode(b"\x05", zero_copy=1)) == 5
        assert on(impl, lambda: codec.FieldType.encode(ft, 5)) == b"\x05"
    for call in (lambda: ft.decode(), lambda: ft.decode(b"\x05", nope=True),
                 lambda: ft.decode(b"\x05", b"")):
        assert _error_of("python", call)[0] is _error_of("native", call)[0] is TypeError


@pytest.mark.parametrize(
    ("hint", "value"),
    [(int, 5), (int, 300), (int, -7), (int, 2**64), (float, 1.5), (float, 3), (str, ""),
     (str, "a" * 31), (str, "b" * 32), (str, "é"), (bool, True), (Any, None),
     (bytes, b""), (bytes, b"x" * 5000), (int | None, None), (Any, 2**70)],
)
def test_scalar_fast_paths_match_python(hint: Any, value: Any) -> None:
    ft = codec.field_type(hint)
    data = on("python", lambda: ft.encode(value))
    assert on("native", lambda: ft.encode(value)) == data
    assert same(on("native", lambda: ft.decode(data)), on("python", lambda: ft.decode(data)))
    _agree(data + b"\xc0", hint)  # trailing bytes: refused alike


@pytest.mark.parametrize(
    ("hint", "value"),
    [(list[int], [1, "x"]), (dict[str, int], {"a": "x"}), (_PItem, _PItem(a=1, b=["x"])),
     (int, 2.5), (str, "\ud800"), (list[Any], [object()])],
)
def test_native_coder_raises_the_python_errors(hint: Any, value: Any) -> None:
    if isinstance(value, _PItem):
        value.b.append(3)  # an in-place change the hint refuses
    ft = codec.field_type(hint)
    py = _error_of("python", lambda: ft.encode(value))
    nat = _error_of("native", lambda: ft.encode(value))
    if hint is str:  # lone surrogates: same type, the messages word the cause differently
        assert py[0] is nat[0] is SerializationError
    else:
        assert py == nat


@pytest.mark.parametrize(
    "raw",
    [
        {"a": 1, "b": ["x"]},
        {"b": ["x"], "a": 1, "c": [1, {"k": 2}]},  # fields out of order
        {"a": 1, "b": ["x"], "zz": 5},  # a key that is not a field
        {"a": "x", "b": ["x"]},  # a field value that does not fit
        {"a": 1},  # a missing field
        [1, 2],  # not a map
    ],
)
def test_native_record_decode_matches_python(raw: Any) -> None:
    import msgpack

    data = msgpack.packb(raw)
    _agree(data, _PItem)
    _agree(data, list[_PItem])
    # A duplicate key: the last value wins on both, whatever the first one holds.
    dup = b"\x83\xa1a\xa1x\xa1a\x01\xa1b\x90"
    _agree(dup, _PItem)
    assert on("native", lambda: codec.decode(dup, _PItem)) == _PItem(a=1, b=[])


def test_ref_factory_set_after_the_coder_is_built() -> None:
    ft = codec.field_type(Any)
    data = bytes.fromhex("c7180c93af6578616d706c652e436f756e74657201a5616c696365")
    assert on("native", lambda: ft.decode(data)) == ("example.Counter", 1, "alice")
    codec.set_default_ref_factory(lambda c, p, o: f"{c}/{p}/{o}")
    assert on("native", lambda: ft.decode(data)) == "example.Counter/1/alice"
    assert on("python", lambda: ft.decode(data)) == "example.Counter/1/alice"


class _Slots:
    """A plain class: its instance `__dict__` is a split-table dict."""

    def __init__(self) -> None:
        self.a = "x"
        self.b = 2


def _with_holes() -> dict[str, int]:
    d = {f"key{i:02d}": i for i in range(40)}
    for i in range(0, 40, 3):
        del d[f"key{i:02d}"]  # deleted entries stay in the table as holes
    return d


@pytest.mark.parametrize(
    ("hint", "value"),
    [
        (dict[str, str], {f"key{i:02d}": f"value-{i:08d}" for i in range(36)}),
        (dict[str, int], _with_holes()),
        (Any, _with_holes()),
        (Any, {1: "a", "b": 2, 3: [1, 2], -4: None}),  # general (non-str) table
        (dict[int, str], {i * 7919: str(i) for i in range(100)}),
        (dict[str, Any], _Slots().__dict__),  # split table
        (dict[str, str], {"é": "ü", "ключ": "значение", "😀": "x", "a" * 40: "é" * 40}),
        (dict[str, str], {f"k{i}-{'x' * (i % 50)}": f"v{i}" for i in range(3000)}),
        (dict[str, str], {}),
    ],
)
def test_dict_tables_encode_and_decode_alike(hint: Any, value: Any) -> None:
    """Every dict table layout the native encoder reads in place (unicode and general
    combined tables, holes left by deletions, split instance dicts) gives the bytes of the
    Python codec, and both decode them back."""
    data = both_encode(value, hint)
    cross_decode(data, hint, dict(value))
    ft = codec.field_type(hint)
    assert on("native", lambda: ft.encode(value)) == data
    assert on("native", lambda: ft.decode(data)) == dict(value)


def test_key_cache_evictions_and_collisions_decode_right() -> None:
    """More distinct keys than the key cache has slots, decoded twice in alternating
    maps (hits, misses and slots taken over by other keys), non-ASCII keys among them."""
    big = {f"key{i}": i for i in range(2000)}
    other = {f"{chr(0x400 + i % 64)}-{i}": i for i in range(700)}
    data_big = both_encode(big, dict[str, int])
    data_other = both_encode(other, dict[str, int])
    ft = codec.field_type(dict[str, int])
    for _ in range(2):
        assert on("native", lambda: ft.decode(data_big)) == big
        assert on("native", lambda: ft.decode(data_other)) == other
        assert on("native", lambda: codec.decode(data_other, Any)) == other


def test_dict_changed_while_encoding_is_refused_alike() -> None:
    """Python code run mid-dict (a getter that grows and shrinks the dict being encoded)
    raises SerializationError on both codecs; the native one reads no stale table."""
    import dataclasses

    outer: dict[str, Any] = {}

    @dataclasses.dataclass
    class Grows:
        a: int

        def __getattribute__(self, name: str) -> Any:
            if name == "a":
                outer.update({f"new{i}": i for i in range(100)})
                outer.pop("z", None)
            return object.__getattribute__(self, name)

    for hint in (Any, dict[str, Any], dict[str, Grows | int]):
        for impl in ("python", "native"):
            outer.clear()
            outer.update({"x": 1, "m": Grows(a=1), "z": 2})
            err = _error_of(impl, lambda: codec.encode(outer, hint))  # noqa: B023
            assert err[0] is SerializationError, (impl, hint, err)
