"""One LMDB handle per environment and process.

LMDB forbids opening one environment twice in a process (its fcntl() locks belong to the
process and file, so closing the second handle drops the first one's locks), and ``lmdb``
3 refuses it outright. The SDK's Python store and its native engine are separate LMDB
builds, so every way the SDK reaches a directory must go through one handle: these tests
count the handles the process really holds (open descriptors of ``lock.mdb``) in each case.
They also check that the Python store creates LMDB 0.9 files whatever ``lmdb`` defaults
to, since the native side (LMDB 0.9) must open the same files.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from oaas_sdk import (
    ConflictError,
    Mapped,
    OaasConfig,
    OaasObject,
    StorageError,
    mapped,
    oaas,
    runtime,
)
from oaas_sdk.stores.lmdb import LmdbStore, claimed_environments

from .conftest import _need_impl
from .models import Counter

ROOT = Path(__file__).resolve().parents[1]


@oaas.service("Canvas", package="handles")
class Canvas(OaasObject):
    title: str = ""
    pixels: Mapped = mapped(size=256)


def lock_handles(store: Path) -> int:
    """Open descriptors of this process on ``store``'s LMDB lock file: one per handle."""
    lock = os.path.realpath(store / "lock.mdb")
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == lock:
                n += 1
        except OSError:  # closed meanwhile (listdir's own descriptor)
            pass
    return n


def configure(impl: str, store: Path, **over: object) -> None:
    oaas.configure(OaasConfig(native="on" if impl == "native" else "off",
                              storage=f"lmdb:{store}", batch_max_delay_ms=0.5, **over))


@pytest.fixture
def store(tmp_path: Path):
    yield tmp_path / "store"
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    gc.collect()


def test_reconfiguring_to_the_same_directory_keeps_one_handle(impl: str, store: Path) -> None:
    configure(impl, store)
    early = Counter.create(obj_id=1)
    early.commit()
    assert lock_handles(store) == 1
    configure(impl, store, durability="async")
    Counter.create(obj_id=2).commit()
    # An object loaded under the replaced configuration commits through the current handle.
    early.count = 7
    early.commit()
    runtime.current().flush()
    assert lock_handles(store) == 1
    assert list(claimed_environments().values()) == [
        "the native engine" if impl == "native" else "the Python lmdb store"]
    configure(impl, store)
    assert Counter.load(1).count == 7 and Counter.load(2).count == 0
    assert lock_handles(store) == 1


@pytest.mark.parametrize("first,second", [("native", "python"), ("python", "native")])
def test_switching_implementation_on_one_store_keeps_one_handle(
        first: str, second: str, store: Path) -> None:
    _need_impl("native")
    configure(first, store)
    c = Counter.create(obj_id=1)
    c.count = 3
    c.commit()
    configure(second, store)
    assert runtime.current().implementation == second
    loaded = Counter.load(1)
    assert loaded.count == 3
    loaded.count = 4
    loaded.commit()
    c.count = 5  # the first configuration's object, now committing under the second
    with pytest.raises(ConflictError):
        c.commit()  # same object, stale version: refused, not written through a 2nd handle
    assert lock_handles(store) == 1
    configure(first, store)
    assert Counter.load(1).count == 4
    assert lock_handles(store) == 1


def test_mapped_fields_and_the_entry_cache_open_no_handle(impl: str, store: Path) -> None:
    configure(impl, store)
    cv = Canvas.create(obj_id=1)
    cv.pixels[:3] = b"abc"
    cv.title = "t"
    cv.commit()
    del cv
    gc.collect()  # the dropped object's entries go to the entry cache
    again = Canvas.load(1)
    assert bytes(again.pixels[:3]) == b"abc" and again.title == "t"
    assert oaas.stats()["cache_hits"] >= 1
    assert lock_handles(store) == 1


def test_a_second_handle_is_refused_with_a_clear_error(impl: str, store: Path) -> None:
    configure(impl, store)
    Counter.create(obj_id=1).commit()
    with pytest.raises(StorageError, match="already open in this process"):
        LmdbStore(str(store))
    assert lock_handles(store) == 1
    Counter.create(obj_id=2).commit()  # the refused attempt left the open handle working


def test_an_object_of_a_replaced_store_is_not_written_through_a_new_handle(
        impl: str, store: Path, tmp_path: Path) -> None:
    configure(impl, store)
    c = Counter.create(obj_id=1)
    c.commit()
    configure(impl, tmp_path / "other")
    c.count = 9
    with pytest.raises(StorageError, match="load it again"):
        c.commit()
    assert c.count == 9  # the change is kept
    assert lock_handles(store) == 0
    configure(impl, store)
    assert Counter.load(1).count == 0


def _run(code: str, env: dict[str, str]) -> str:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_python_store_creates_lmdb_0_9_files_whatever_lmdb_defaults_to(tmp_path: Path) -> None:
    """``lmdb`` 3 creates LMDB 1.0 files under ``LMDB_DEFAULT_LIB_VERSION=1`` unless told
    otherwise; the native side (LMDB 0.9) must still open what the fallback created."""
    _need_impl("native")
    store = tmp_path / "store"
    write = """
        from oaas_sdk import OaasConfig, oaas
        from tests.models import Counter
        oaas.configure(OaasConfig(native="off"))  # storage from OAAS_STORAGE
        c = Counter.create(obj_id=1)
        c.count = 41
        c.commit()
        oaas.shutdown()
    """
    _run(write, {"LMDB_DEFAULT_LIB_VERSION": "1", "OAAS_STORAGE": f"lmdb:{store}"})
    read = """
        from oaas_sdk import OaasConfig, oaas
        from tests.models import Counter
        oaas.configure(OaasConfig(native="on"))
        c = Counter.load(1)
        c.count += 1
        c.commit()
        print(Counter.load(1).count)
    """
    assert _run(read, {"OAAS_STORAGE": f"lmdb:{store}"}).strip() == "42"
