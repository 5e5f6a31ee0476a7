"""The write path under fire: SIGKILL at random moments, both implementations on one store,
a full LMDB map, refused values inside a batch. Real processes throughout."""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oaas_sdk import StorageError, oaas
from oaas_sdk.stores.lmdb import LmdbStore

from .conftest import _need_impl
from .models import Counter
from .test_persistence import ROOT, native_flag, run_py

# A fork server: imports the SDK once, commits once (so the native runtime and persister
# thread exist before any fork), then forks one writer per line on stdin. A writer commits
# groups of objects concurrently and prints "ACK <id> <value>" once each group resolved
# (durability="sync"); every field of an object carries the same value, and the object's
# version equals that value, so a half-written object shows.
ZYGOTE = """
import asyncio, os, random, sys
from oaas_sdk import oaas, OaasConfig
from tests.models import Counter

native, store, warm = sys.argv[1], sys.argv[2], sys.argv[3]
oaas.configure(OaasConfig(storage="lmdb:" + warm, native=native))
Counter.create(obj_id=1).commit()

def writer(seed):
    rnd = random.Random(seed)
    oaas.configure(OaasConfig(storage="lmdb:" + store, native=native, durability="sync",
                              batch_max_delay_ms=1))
    async def main():
        objs = [Counter.load_or_create(i) for i in range(8)]
        while True:
            group = rnd.sample(objs, k=rnd.randint(1, len(objs)))
            for o in group:
                v = o.count + 1
                o.count, o.label, o.history = v, "v%d" % v, [str(v)] * 3
            await asyncio.gather(*(o.commit_async() for o in group))
            os.write(1, "".join("ACK %d %d\\n" % (o.object_id, o.count)
                                for o in group).encode())
    asyncio.run(main())

for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            writer(int(line))
        finally:
            os._exit(1)
    os.write(1, b"PID %d\\n" % pid)
    os.waitpid(pid, 0)
    os.write(1, b"DEAD\\n")
"""


class Lines:
    """Complete lines from a pipe, with a deadline (no partial line is ever parsed)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError("the writer went silent")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise AssertionError("the writer's pipe closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


def check_store(path: Path, acked: dict[int, int]) -> int:
    """Every acknowledged value is there, exactly; no object is half written."""
    fields = Counter._oaas_fields
    store = LmdbStore(str(path))
    try:
        for oid in range(8):
            got = store.read(("test.Counter", 0, oid))
            if got is None:
                assert oid not in acked, f"object {oid} acknowledged at {acked[oid]} but absent"
                continue
            e = got.entries
            count = fields["count"].ftype.decode(e["count"]) if "count" in e else 0
            a = acked.get(oid, 0)
            # at most the one commit in flight at the kill may have landed unacknowledged
            assert count in (a, a + 1), (oid, count, a)
            if count:
                assert fields["label"].ftype.decode(e["label"]) == f"v{count}"
                assert fields["history"].ftype.decode(e["history"]) == [str(count)] * 3
            assert got.version == count, (oid, got.version, count)
            acked[oid] = count
        return sum(acked.values())
    finally:
        store.close()


def test_sigkill_at_random_moments_loses_nothing_acknowledged(impl, tmp_path):
    """30 SIGKILLs of a writer in the middle of group commits: after each one every
    acknowledged commit is in the store with its exact value, and no object is half
    written (fields and version agree)."""
    rounds = 30
    rnd = random.Random(4242)
    store, warm = tmp_path / "s", tmp_path / "warm"
    z = subprocess.Popen([sys.executable, "-c", textwrap.dedent(ZYGOTE), native_flag(impl),
                          str(store), str(warm)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=str(ROOT))
    assert z.stdin is not None and z.stdout is not None
    lines = Lines(z.stdout.fileno())
    acked: dict[int, int] = {}
    total_acks = 0
    try:
        for r in range(rounds):
            z.stdin.write(b"%d\n" % r)
            z.stdin.flush()
            pid = None
            wait_for = rnd.randint(0, 12)
            seen = 0
            while pid is None or seen < wait_for:
                line = lines.next()
                if line.startswith("PID "):
                    pid = int(line[4:])
                elif line.startswith("ACK "):
                    _, oid, v = line.split()
                    acked[int(oid)] = max(acked.get(int(oid), 0), int(v))
                    seen += 1
                else:
                    raise AssertionError(f"unexpected line {line!r}")
            os.kill(pid, signal.SIGKILL)
            while (line := lines.next()) != "DEAD":
                if line.startswith("ACK "):  # acknowledged before the kill landed
                    _, oid, v = line.split()
                    acked[int(oid)] = max(acked.get(int(oid), 0), int(v))
            total_acks += seen
            check_store(store, acked)
    finally:
        z.kill()
        z.wait()
    assert total_acks > rounds  # the writers did commit between kills
    assert sum(acked.values()) > 0


def _write_counters(impl: str, store: Path, start: int, n: int) -> subprocess.CompletedProcess[str]:
    return run_py(f"""
        import asyncio
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(storage="lmdb:{store}", native="{native_flag(impl)}"))
        async def main():
            for i in range({start}, {start + n}):
                c = Counter.load_or_create(i)
                c.count = i * 10
                c.history.append("{impl}")
            await oaas.commit_all_async()
        asyncio.run(main())
        print(oaas.stats()["implementation"])
    """)


@pytest.mark.parametrize("writer,reader", [("native", "python"), ("python", "native")])
def test_cross_implementation_in_separate_processes(writer, reader, tmp_path):
    """A store written by one implementation is read, and extended, by the other."""
    _need_impl("native")
    store = tmp_path / "s"
    w = _write_counters(writer, store, 0, 50)
    assert w.returncode == 0, w.stderr
    assert w.stdout.strip() == writer
    r = run_py(f"""
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        oaas.configure(OaasConfig(storage="lmdb:{store}", native="{native_flag(reader)}"))
        assert all(Counter.load(i).count == i * 10 for i in range(50))
        assert all(Counter.load(i).history == ["{writer}"] for i in range(50))
        c = Counter.load(7)
        c.count += 1
        c.commit()
        print(oaas.stats()["implementation"], Counter.load(7)._oaas_state.version)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [reader, "2"]


def test_both_implementations_share_the_lock_file_at_once(tmp_path):
    """A Python process and a native one hold the same environment open together (the same
    lock file, LMDB 0.9 lock format) and each sees the other's commits."""
    _need_impl("native")
    store = tmp_path / "s"
    code = """
        import sys
        from oaas_sdk import oaas, OaasConfig
        from tests.models import Counter
        native, first = sys.argv[1], int(sys.argv[2])
        oaas.configure(OaasConfig(storage="lmdb:{store}", native=native))
        for line in sys.stdin:
            cmd, oid = line.split()
            if cmd == "write":
                c = Counter.create(obj_id=int(oid))
                c.count = int(oid)
                c.commit()
                print("ok", flush=True)
            else:
                oaas.configure(OaasConfig(storage="lmdb:{store}", native=native))
                print(Counter.load(int(oid)).count, flush=True)
    """
    code = textwrap.dedent(code.replace("{store}", str(store)))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = {impl: subprocess.Popen([sys.executable, "-c", code, native_flag(impl), "0"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
             for impl in ("python", "native")}

    def ask(impl: str, line: str) -> str:
        p = procs[impl]
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(line + "\n")
        p.stdin.flush()
        out = p.stdout.readline().strip()
        if not out:
            p.kill()
            raise AssertionError(p.stderr.read() if p.stderr else "no output")
        return out

    try:
        assert ask("python", "write 1") == "ok"
        assert ask("native", "write 2") == "ok"  # both environments open now
        assert ask("python", "read 2") == "2"
        assert ask("native", "read 1") == "1"
        assert ask("native", "write 3") == "ok"
        assert ask("python", "read 3") == "3"
    finally:
        for p in procs.values():
            if p.stdin:
                p.stdin.close()
            p.wait(timeout=30)
    assert all(p.returncode == 0 for p in procs.values())


def test_full_map_grows_and_keeps_everything(lmdb_sdk):
    """The map starts at 1 MiB; 40 commits of 100 KB outgrow it several times over."""
    lmdb_sdk.reconfigure(storage=f"lmdb:{lmdb_sdk.path}?map_size=1048576")
    for i in range(40):
        c = Counter.create(obj_id=i)
        c.label = chr(97 + i % 26) * 100_000
        c.commit()
    assert oaas.stats()["failed_commits"] == 0
    lmdb_sdk.reconfigure()
    assert all(Counter.load(i).label == chr(97 + i % 26) * 100_000 for i in range(40))


async def test_full_map_at_its_limit_fails_that_batch_only(lmdb_sdk):
    """Past max_map_size the commit fails with StorageError, the object stays dirty,
    earlier commits stay, and a later commit that fits succeeds."""
    mib = 1 << 20
    lmdb_sdk.reconfigure(storage=f"lmdb:{lmdb_sdk.path}?map_size={mib}&max_map_size={2 * mib}")
    keep = Counter.create(obj_id=1)
    keep.count = 11
    await keep.commit_async()
    big = Counter.create(obj_id=2)
    big.label = "x" * (3 * mib)
    with pytest.raises(StorageError, match="map is full"):
        await big.commit_async()
    assert big._oaas_state.version == 0 and big.label == "x" * (3 * mib)  # keeps its changes
    big.label = "small now"
    await big.commit_async()
    lmdb_sdk.reconfigure()
    assert Counter.load(1).count == 11
    assert Counter.load(2).label == "small now"


async def test_refused_value_in_the_middle_of_a_batch(sdk):
    """Twenty commits in flight together; the codec refuses the value of the tenth: only
    that commit fails, the other nineteen land in their batch."""
    objs = [Counter.create(obj_id=100 + i) for i in range(20)]
    await oaas.commit_all_async()
    for i, o in enumerate(objs):
        o.count = i + 1
    objs[9].label = "dirty"
    objs[9].__dict__["label"] = object()  # bypasses assignment checks: refused at encode
    results = await asyncio.gather(*(o.commit_async() for o in objs), return_exceptions=True)
    assert isinstance(results[9], TypeError) and "Counter.label" in str(results[9])
    assert [r for i, r in enumerate(results) if i != 9] == [None] * 19
    objs[9].label = "fixed"
    await objs[9].commit_async()
    sdk.reconfigure()
    assert [Counter.load(100 + i).count for i in range(20)] == list(range(1, 21))
    assert Counter.load(109).label == "fixed"


def test_store_path_is_a_file_or_corrupt_leaves_it_alone(impl, tmp_path):
    """Both implementations refuse a file and a corrupt environment with StorageError
    naming the store, and write nothing into them."""
    from oaas_sdk import OaasConfig

    f = tmp_path / "f"
    f.write_bytes(b"keep me")
    with pytest.raises(StorageError, match=r"lmdb store at .*not a directory"):
        oaas.configure(OaasConfig(storage=f"lmdb:{f}", native=native_flag(impl)))
        Counter.create(obj_id=1).commit()
    assert f.read_bytes() == b"keep me"
    d = tmp_path / "bad"
    d.mkdir()
    junk = os.urandom(1 << 16)
    (d / "data.mdb").write_bytes(junk)
    with pytest.raises(StorageError, match="lmdb store at"):
        oaas.configure(OaasConfig(storage=f"lmdb:{d}", native=native_flag(impl)))
        Counter.create(obj_id=1).commit()
    assert (d / "data.mdb").read_bytes() == junk


def test_native_engine_is_used_for_lmdb(lmdb_sdk):
    from oaas_sdk import runtime
    from oaas_sdk.engine import NativeEngine, PythonEngine

    Counter.create(obj_id=1).commit()
    eng = runtime.current().engine
    assert isinstance(eng, NativeEngine if lmdb_sdk.impl == "native" else PythonEngine)
    assert oaas.stats()["implementation"] == lmdb_sdk.impl


def test_read_sees_a_commit_written_while_the_store_read_runs() -> None:
    """``PythonEngine.read`` overlays pending commits on the store's state. A commit the
    persister writes while the store read is under way (a Redis round trip) must be in
    one of the two: here the store read returns the state from before the write."""
    from oaas_sdk.engine import PythonEngine
    from oaas_sdk.stores import WriteRecord
    from oaas_sdk.stores.memory import MemoryStore

    class ReadRacingTheWriter(MemoryStore):
        engine: PythonEngine

        def read(self, key):  # type: ignore[no-untyped-def]
            before = super().read(key)
            self.engine.flush()  # the persister writes the pending commit meanwhile
            return before

    store = ReadRacingTheWriter()
    engine = PythonEngine(store, durability="async", batch_max_delay_ms=50)
    store.engine = engine
    key = ("t.Racer", 0, 1)
    try:
        engine.submit(WriteRecord(key, 0, {"count": b"\x07"}, time_ms=1)).wait()
        found = engine.read(key)
        assert found is not None and found.version == 1 and found.entries == {"count": b"\x07"}
    finally:
        engine.close()
