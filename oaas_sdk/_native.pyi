"""Type stub of the native extension ``oaas_sdk._native`` (built from ``oprc-py/``).

Private: users go through ``oaas_sdk``; the package decides which implementation runs.
"""

from typing import Any

from typing_extensions import Buffer

__version__: str

def build_profile() -> str:
    """``"release"`` or ``"debug"``: the Cargo profile the extension was compiled with."""

def build_info() -> dict[str, object]:
    """``{"version": str, "profile": str, "components": list[str]}``."""

# --- engine (oprc-py/src/engine/) ------------------------------------------------------

class Ticket:
    """Completion of one commit submitted to :class:`Engine`."""

    @property
    def error(self) -> BaseException | None:
        """``ConflictError`` / ``StorageError`` of a failed commit, else ``None``."""
    def done(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> None:
        """Block with the GIL released; raise the commit's error; ``TimeoutError`` after
        ``timeout`` seconds."""
    def awaitable(self) -> Any:
        """An asyncio future of the running loop (a Rust future), resolved to ``None`` when
        the commit completes, or failed with its error."""

class Engine:
    """Native batcher + persister over an LMDB environment in directory ``path``.

    Raises ``StorageError`` when the store cannot be opened (a file, a corrupt or foreign
    environment, no permission)."""

    def __init__(self, path: str, *, durability: str = "sync", batch_max_entries: int = 4096,
                 batch_max_delay_ms: float = 2.0, map_size: int = 1 << 30,
                 max_map_size: int = 1 << 40) -> None: ...
    @property
    def name(self) -> str: ...
    def submit(self, cls_id: str, partition_id: int, object_id: int | str,
               expected_version: int, entries: dict[str, bytes], deletes: list[str] = ...,
               delete_object: bool = False, time_ms: int = 0, token: int = 0) -> Ticket:
        """Queue one commit; a non-zero ``token`` also reports its outcome through
        :meth:`take_completions`."""
    def take_completions(self, timeout: float | None = None
                         ) -> list[tuple[int, BaseException | None]] | None:
        """Outcomes of token-carrying commits (typically one batch), ``[]`` on timeout
        (seconds), ``None`` once closed; blocks with the GIL released."""
    def read(self, cls_id: str, partition_id: int, object_id: int | str
             ) -> tuple[int, int, int, dict[str, bytes]] | None:
        """``(version, created_ms, updated_ms, entries)`` or ``None``; GIL released."""
    def scan(self, prefix: bytes) -> list[bytes]: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...
    def map_size(self) -> int: ...
    def stats(self) -> dict[str, float | int]: ...

class MappedFile(Buffer):
    """A file of exactly ``size`` bytes mapped shared and writable (memmap2); the buffer
    protocol gives zero-copy views. ``ValueError`` when an existing file has another size,
    ``StorageError`` when it cannot be created or mapped."""

    def __init__(self, path: str, size: int) -> None: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def flush(self) -> None:
        """msync (MS_SYNC) with the GIL released."""
    def close(self) -> None: ...

def raw_batched_writes(path: str, n_objects: int, n_fields: int = 10, value_len: int = 100,
                       batch: int = 256) -> float:
    """Benchmark ceiling: elapsed seconds to write ``n_objects`` objects straight into a store,
    ``batch`` per fsynced transaction."""
