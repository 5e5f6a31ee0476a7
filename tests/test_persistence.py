"""Durability, conflicts and bad conditions on the stores, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from oaas_sdk import (
    ConfigError,
    ConflictError,
    OaasConfig,
    SerializationError,
    StorageError,
    oaas,
)
from oaas_sdk.stores import entry_key_bytes, object_key_bytes

from .models import Counter

ROOT = Path(__file__).resolve().parent.parent


def run_py(code: str, *, env_extra: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(ROOT))


def native_flag(impl: str) -> str:
    return "on" if impl == "native" else "off"


def test_sync_commit_survives_sigkill(impl, tmp_path):
    """A commit resolved with durability="sync" is read back after SIGKILL of the writer."""
    store = tmp_path / "s"
    writer = textwrap.dedent(f"""
        import asyncio, sys, time
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(storage="lmdb:{store}", durability="sync",
                                  native="{native_flag(impl)}"))
        async def main():
            c = Counter.create(obj_id=99)
            c.count = 123456
            c.history.append("durable")
            await c.commit_async()
            print("COMMITTED", flush=True)
            time.sleep(60)  # killed here, before any clean shutdown
        asyncio.run(main())
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True,
                         env=env, cwd=str(ROOT))
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "COMMITTED", line
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    r = run_py(f"""
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(storage="lmdb:{store}", native="{native_flag(impl)}"))
        c = Counter.load(99)
        print(c.count, c.history)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "123456 ['durable']"


def test_async_durability_is_flushed_at_exit(impl, tmp_path):
    store = tmp_path / "s"
    r = run_py(f"""
        import asyncio
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(storage="lmdb:{store}", durability="async",
                                  batch_max_delay_ms=50, native="{native_flag(impl)}"))
        async def main():
            for i in range(200):
                c = Counter.create(obj_id=i)
                c.count = i
                await c.commit_async()
        asyncio.run(main())
    """)
    assert r.returncode == 0, r.stderr
    r = run_py(f"""
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(storage="lmdb:{store}", native="{native_flag(impl)}"))
        print(sum(Counter.load(i).count for i in range(200)))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(sum(range(200)))


async def test_configure_flushes_pending_writes(lmdb_sdk):
    lmdb_sdk.reconfigure(durability="async", batch_max_delay_ms=200)
    for i in range(20):
        c = Counter.create(obj_id=1000 + i)
        c.count = i
        await c.commit_async()
    lmdb_sdk.reconfigure()
    assert [Counter.load(1000 + i).count for i in range(20)] == list(range(20))


def test_second_writer_gets_conflict(lmdb_sdk, tmp_path):
    c = Counter.create(obj_id=5)
    c.count = 1
    c.commit()
    # another process loads, changes and commits the same object
    r = run_py(f"""
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(storage="lmdb:{lmdb_sdk.path}",
                                  native="{native_flag(lmdb_sdk.impl)}"))
        c = Counter.load(5)
        c.count = 50
        c.commit()
    """)
    assert r.returncode == 0, r.stderr
    c.count = 2
    with pytest.raises(ConflictError, match="test.Counter/0/5"):
        c.commit()
    assert c.count == 2  # the object keeps its change
    c.refresh()
    assert c.count == 50  # the other writer's value was not overwritten
    c.count += 1
    c.commit()
    lmdb_sdk.reconfigure()
    assert Counter.load(5).count == 51


async def test_conflict_within_process_keeps_dirty_state(sdk):
    c = Counter.create(obj_id=6)
    await c.commit_async()
    # simulate a stale in-memory version: another writer committed through the engine
    from oaas_sdk import runtime
    from oaas_sdk.stores import WriteRecord

    rt = runtime.current()
    rt.engine.submit(WriteRecord(("test.Counter", 0, 6), 1, {"count": b"\x07"})).wait()
    c.count = 3
    with pytest.raises(ConflictError):
        await c.commit_async()
    assert c.count == 3 and "count" in c._oaas_state.dirty


def test_unwritable_store_directory(tmp_path, impl):
    if os.geteuid() == 0:
        bad = tmp_path / "file"
        bad.write_text("not a directory")
        path = bad / "sub"  # a path below a regular file can never be created
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        path = ro / "store"
    with pytest.raises(StorageError, match="lmdb store at"):
        oaas.configure(OaasConfig(storage=f"lmdb:{path}", native=native_flag(impl)))


def test_store_path_is_a_file(tmp_path, impl):
    f = tmp_path / "afile"
    f.write_bytes(b"x" * 100)
    with pytest.raises(StorageError, match="not a directory"):
        oaas.configure(OaasConfig(storage=f"lmdb:{f}", native=native_flag(impl)))
    assert f.read_bytes() == b"x" * 100  # untouched


def test_corrupt_environment(tmp_path, impl):
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StorageError, match="lmdb store at"):
        oaas.configure(OaasConfig(storage=f"lmdb:{d}", native=native_flag(impl)))


async def test_corrupt_entry_names_object_and_field(lmdb_sdk):
    good = Counter.create(obj_id=1)
    good.count = 11
    bad = Counter.create(obj_id=2)
    bad.count = 22
    odd = Counter.create(obj_id=3)
    odd.history = ["a"]
    odd.count = 33
    await oaas.commit_all_async()
    oaas.shutdown()
    import lmdb

    env = lmdb.open(str(lmdb_sdk.path), max_dbs=4)
    entries = env.open_db(b"entries")
    with env.begin(write=True, db=entries) as txn:
        txn.put(entry_key_bytes(object_key_bytes(("test.Counter", 0, 2)), "count"), b"\xc1")
        txn.put(entry_key_bytes(object_key_bytes(("test.Counter", 0, 3)), "history"),
                b"\x92\xa1")  # truncated array
    env.close()
    lmdb_sdk.reconfigure()
    # a corrupt scalar field: the load fails, naming the object and the field
    with pytest.raises(SerializationError) as ei:
        Counter.load(2)
    msg = str(ei.value)
    assert "test.Counter/0/2" in msg and "'count'" in msg
    # a corrupt list field (decoded on first read): the read fails, the rest is usable
    o = Counter.load(3)
    assert o.count == 33
    with pytest.raises(SerializationError, match=r"test.Counter/0/3 field 'history'"):
        _ = o.history
    assert Counter.load(1).count == 11  # other objects still load
    # nothing was lost: the undamaged entries are still stored
    from oaas_sdk import runtime

    stored = runtime.current().engine.read(("test.Counter", 0, 2))
    assert stored is not None and set(stored.entries) >= {"history", "tags", "label"}


async def test_unencodable_value_fails_only_that_commit(sdk):
    ok = Counter.create(obj_id=31)
    bad = Counter.create(obj_id=32)
    await oaas.commit_all_async()
    ok.count = 1
    bad.label = "x"
    bad.__dict__["label"] = object()  # bypasses assignment checks: caught at encode
    with pytest.raises(TypeError, match="Counter.label"):
        await bad.commit_async()
    await ok.commit_async()
    sdk.reconfigure()
    assert Counter.load(31).count == 1
    assert Counter.load(32).label == ""


def test_config_from_environment(monkeypatch):
    monkeypatch.setenv("OAAS_DURABILITY", "async")
    monkeypatch.setenv("OAAS_BATCH_MAX_ENTRIES", "17")
    monkeypatch.setenv("OAAS_STORAGE", "memory")
    c = OaasConfig()
    assert (c.durability, c.batch_max_entries, c.storage) == ("async", 17, "memory")
    assert OaasConfig(durability="sync").durability == "sync"  # code wins


def test_config_errors():
    with pytest.raises(ConfigError, match="durability"):
        OaasConfig(durability="sometimes")
    with pytest.raises(ConfigError, match="storage"):
        OaasConfig(storage="ftp://x")
    with pytest.raises(ConfigError, match="batch_max_entries"):
        OaasConfig(batch_max_entries=0)


def test_native_on_without_extension_raises_config_error():
    r = run_py("""
        import sys
        sys.modules["oaas_sdk._native"] = None  # the extension cannot be imported
        from oaas_sdk import oaas, OaasConfig, ConfigError, native_available
        assert not native_available()
        oaas.configure(OaasConfig(mock_mode=True, native="auto"))
        assert oaas.stats()["implementation"] == "python"
        try:
            oaas.configure(OaasConfig(mock_mode=True, native="on"))
        except ConfigError as e:
            print("ConfigError", e)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ConfigError") and "native" in r.stdout


def test_native_extension_reports_version_and_profile():
    from oaas_sdk import native_available

    from .conftest import _need_impl

    _need_impl("native")
    assert native_available()
    from oaas_sdk import _native

    assert _native.__version__.count(".") == 2
    assert _native.build_profile() in ("release", "debug")
    info = _native.build_info()
    assert info["version"] == _native.__version__


def test_native_extension_links_a_current_lmdb_0_9():
    """The native engine links LMDB 0.9.x (the data and lock formats the Python store's
    `lmdb` package shares, docs/format.md), and a current one: >= 0.9.33, not the 0.9.24
    bundled by the crates.io lmdb-rkv-sys."""
    import lmdb

    from oaas_sdk.stores.lmdb import ENGINE_0_9

    from .conftest import _need_impl

    _need_impl("native")
    from oaas_sdk import _native

    version = _native.build_info()["lmdb"]
    major, minor, patch = (int(part) for part in version.split("."))
    assert (major, minor) == (0, 9), version
    assert patch >= 33, version
    # The engine the Python store opens with (lib_version=0 where `lmdb` has two) is 0.9.
    assert lmdb.version(**ENGINE_0_9)[:2] == (0, 9)


@pytest.mark.parametrize("env, expected", [(None, 10_000), ("250", 250)])
def test_native_allocator_purge_delay(env, expected):
    """The extension keeps freed allocator pages for 10 s (they were purged and faulted
    back in under a commit load), unless MIMALLOC_PURGE_DELAY says otherwise."""
    from .conftest import _need_impl

    _need_impl("native")
    child_env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"}
    if env is not None:
        child_env["MIMALLOC_PURGE_DELAY"] = env
    code = "from oaas_sdk import _native; print(_native.build_info()['allocator'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=child_env, check=True)
    assert r.stdout.strip() == repr({"name": "mimalloc", "purge_delay_ms": expected})
