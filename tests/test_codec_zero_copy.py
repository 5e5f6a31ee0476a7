"""Zero-copy decoding (native codec, docs/native.md): views into the input on request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from oaas_sdk import codec, native_available
from oaas_sdk.errors import SerializationError

np = pytest.importorskip("numpy")

if not native_available():
    pytest.skip("native extension not built", allow_module_level=True)

from oaas_sdk import _native  # noqa: E402


@pytest.fixture(autouse=True)
def _native_backend() -> Iterator[None]:
    codec.set_backend(_native)
    yield
    codec.set_backend(None)


BIG = bytes(range(256)) * 64  # 16 KiB


@pytest.mark.parametrize("hint", [Any, bytes, memoryview])
def test_large_bin_values_come_back_as_read_only_views(hint: Any) -> None:
    data = codec.encode(BIG, bytes)
    v = codec.decode(data, hint, zero_copy=True)
    assert type(v) is memoryview and v.readonly and v.obj is data
    assert v.tobytes() == BIG
    copy = codec.decode(data, hint)
    assert type(copy) is (bytes if hint is not memoryview else memoryview)
    assert bytes(copy) == BIG


def test_small_values_and_bytearray_hints_are_copies() -> None:
    small = codec.encode(b"abc")
    assert type(codec.decode(small, bytes, zero_copy=True)) is bytes
    big = codec.encode(BIG)
    assert type(codec.decode(big, bytearray, zero_copy=True)) is bytearray
    nested = codec.decode(codec.encode({"a": [BIG]}), zero_copy=True)
    assert type(nested["a"][0]) is memoryview


def test_ndarray_view_shares_the_input_and_default_is_a_writable_copy() -> None:
    a = np.arange(4096, dtype="<f8")
    data = codec.encode(a, np.ndarray)
    view = codec.decode(data, np.ndarray, zero_copy=True)
    assert np.array_equal(view, a) and not view.flags.writeable
    assert np.shares_memory(view, np.frombuffer(data, dtype=np.uint8))
    copy = codec.decode(data, np.ndarray)
    assert copy.flags.writeable and not np.shares_memory(copy, np.frombuffer(data, np.uint8))


def test_decode_reads_any_buffer() -> None:
    data = codec.encode({"k": BIG})
    for buf in (bytearray(data), memoryview(data)):
        assert codec.decode(buf) == {"k": BIG}
    with pytest.raises(SerializationError, match="contiguous"):
        codec.decode(memoryview(data)[::2])
