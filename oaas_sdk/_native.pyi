"""Type stub of the native extension ``oaas_sdk._native`` (built from ``oprc-py/``).

Private: users go through ``oaas_sdk``; the package decides which implementation runs.
"""

from collections.abc import Callable, Sequence
from typing import Any

from oaas_sdk.stores import ObjectKey, StoredObject

__version__: str

def build_profile() -> str:
    """``"release"`` or ``"debug"``: the Cargo profile the extension was compiled with."""

def build_info() -> dict[str, object]:
    """``{"version": str, "profile": str, "components": list[str]}``."""

# ------------------------------------------------------------------ data path (data.rs)
# Byte format: docs/format.md, "State codec". Used through oaas_sdk.codec and
# oaas_sdk.runtime; see docs/native.md.


class Plan:
    """A compiled encode plan of one field type (``Codec.plan``); opaque."""

class DecodePlan:
    """A compiled decode plan of one field type (``Codec.decode_plan``); opaque."""

class Codec:
    """The native state codec. Built once per process by ``codec.set_backend``."""

    def __init__(self, helpers: dict[str, Any]) -> None:
        """``helpers``: the Python types and functions of ``codec._native_helpers()``."""
    def plan(self, desc: tuple[Any, ...]) -> Plan:
        """Compile ``codec._plan_desc(field_type)``; ValueError for an unknown node."""
    def decode_plan(self, desc: tuple[Any, ...]) -> DecodePlan:
        """Compile ``codec._decode_plan_desc(field_type)``."""
    def decode_with(
        self,
        data: bytes | bytearray | memoryview,
        plan: DecodePlan,
        ref_factory: Callable[[str, int, int | str], Any],
        view_min: int = 0,
    ) -> Any:
        """Bytes -> value of a hinted field (errors as ``FieldType.decode``)."""
    def encode(self, value: Any) -> bytes:
        """``value`` under an ``Any`` hint -> its bytes. TypeError for unsupported types,
        SerializationError for unrepresentable values (surrogates, keys, depth > 100)."""
    def encode_plan(self, value: Any, plan: Plan) -> bytes:
        """``value`` for a hinted field (errors as ``FieldType.encode``)."""
    def encode_many(self, values: list[Any], plans: list[Plan | None] | None = None) -> list[bytes]:
        """One call for many values (``None`` plan: ``Any``). The exception of a failing
        value carries ``_oaas_index``; Ctrl-C interrupts long batches."""
    def decode(
        self,
        data: bytes | bytearray | memoryview,
        ref_factory: Callable[[str, int, int | str], Any] | None = None,
        view_min: int = 0,
    ) -> Any:
        """Bytes -> value (raw tuples/sets/``_RawRef`` for hint code when ``ref_factory`` is
        None). ``view_min > 0``: bin values and ndarray data of at least that many bytes
        are read-only views into ``data``. SerializationError for malformed input."""
    def decode_many(
        self,
        items: Sequence[bytes],
        ref_factory: Callable[[str, int, int | str], Any] | None = None,
    ) -> list[Any]:
        """``decode`` of each item; Ctrl-C interrupts long batches."""

class EntryCache:
    """Native ``oaas_sdk.cache.EntryCache`` (moka): bounded by bytes, optional TTL,
    LRU, lookups and inserts with the GIL released."""

    max_bytes: int
    ttl_s: float | None
    def __init__(
        self, max_bytes: int, ttl_s: float | None = None, record_type: type | None = None
    ) -> None:
        """``max_bytes``: bound (bytes; 0 disables); ``ttl_s``: seconds or None;
        ``record_type``: what ``get`` builds (default ``StoredObject``)."""
    def get(self, key: ObjectKey) -> StoredObject | None: ...
    def put(self, key: ObjectKey, obj: StoredObject) -> None: ...
    def update(
        self,
        key: ObjectKey,
        version: int,
        time_ms: int,
        entries: dict[str, bytes],
        deletes: Sequence[str] = (),
    ) -> None: ...
    def discard(self, key: ObjectKey) -> None: ...
    def clear(self) -> None: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    def __len__(self) -> int: ...
