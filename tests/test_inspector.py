"""The store inspector (``python -m oaas_sdk`` / ``oaas-sdk``), ``Store.classes()``, the
read-only LMDB store and the schema-less decode (``codec.decode_plain``) it uses."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from oaas_sdk import (
    OaasConfig,
    OaasObject,
    ObjectRef,
    StorageError,
    codec,
    native_available,
    oaas,
)
from oaas_sdk.cli import main
from oaas_sdk.errors import SerializationError
from oaas_sdk.stores import WriteRecord, open_store
from oaas_sdk.stores.lmdb import LmdbStore
from oaas_sdk.stores.memory import MemoryStore
from tests.codec_vectors import NDARRAY, VECTORS

ROOT = Path(__file__).resolve().parent.parent


class Address(BaseModel):
    city: str


@oaas.service("Shelf", package="insp")
class Shelf(OaasObject):
    label: str = ""
    count: int = 0
    books: list[str] = []
    tags: set[str] = set()
    blob: bytes = b""
    when: Optional[dt.datetime] = None
    address: Optional[Address] = None
    neighbour: Optional[Shelf] = None


@oaas.service("Note", package="insp")
class Note(OaasObject):
    text: str = ""


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    oaas.configure(OaasConfig(mock_mode=True, native="off"))
    codec.set_backend(None)


def _fill(path: Path, impl: str) -> None:
    """Objects of two classes committed to an LMDB store at ``path``, then closed."""
    oaas.configure(OaasConfig(storage=f"lmdb:{path}", native="on" if impl == "native" else "off"))
    a = Shelf.create(1, label="fiction", count=2, books=["Emma", "Ulysses"],
                     tags={"b", "a"}, blob=b"\x00\xff",
                     when=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                     address={"city": "Paris"})
    a.commit()
    b = Shelf.create("side-shelf", neighbour=a)
    b.commit()
    a.count = 3
    a.commit()
    Note.create(7, text="x" * 10).commit()
    oaas.shutdown()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def _env(impl: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OAAS_NATIVE="on" if impl == "native" else "off")


# -- Store.classes and the read-only store --------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_store_classes_lists_classes_with_objects_sorted(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else LmdbStore(str(tmp_path / "s"))
    assert store.classes() == []
    recs = [WriteRecord(("b.B", 0, 1), 0, {"x": b"\x01"}),
            WriteRecord(("a.A", 3, "k"), 0, {"x": b"\x01"}),
            WriteRecord(("a.AA", 0, 2), 0, {}),
            WriteRecord(("a.A", 0, 9), 0, {"x": b"\x01"})]
    assert store.write_batch(recs) == [None] * 4
    assert store.classes() == ["a.A", "a.AA", "b.B"]
    store.write_batch([WriteRecord(("a.AA", 0, 2), 1, delete_object=True)])
    assert store.classes() == ["a.A", "b.B"]
    store.close()


def test_readonly_lmdb_store_creates_and_writes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    with pytest.raises(StorageError, match="no store there"):
        open_store(f"lmdb:{missing}", readonly=True)
    assert not missing.exists()
    w = LmdbStore(str(tmp_path / "s"))
    w.write_batch([WriteRecord(("a.A", 0, 1), 0, {"x": b"\x01"})])
    w.close()
    r = open_store(f"lmdb:{tmp_path / 's'}", readonly=True)
    assert r.read(("a.A", 0, 1)).entries == {"x": b"\x01"}  # type: ignore[union-attr]
    with pytest.raises(StorageError):
        r.write_batch([WriteRecord(("a.A", 0, 2), 0, {"x": b"\x01"})])
    r.close()
    foreign = tmp_path / "foreign"
    import lmdb

    lmdb.open(str(foreign)).close()
    with pytest.raises(StorageError, match="not an oaas-sdk store"):
        open_store(f"lmdb:{foreign}", readonly=True)


# -- schema-less decode ---------------------------------------------------------------------


def _on(impl: str, fn: Any) -> Any:
    from oaas_sdk._backend import native_module

    codec.set_backend(native_module("on") if impl == "native" else None)
    try:
        return fn()
    finally:
        codec.set_backend(None)


def _impls() -> list[str]:
    if native_available():
        return ["python", "native"]
    if os.environ.get("OAAS_REQUIRE_NATIVE") == "1":
        raise RuntimeError("the native extension is required (OAAS_REQUIRE_NATIVE=1)")
    return ["python"]


@pytest.mark.parametrize(("name", "hint", "value", "hex_bytes"), VECTORS,
                         ids=[v[0] for v in VECTORS])
def test_decode_plain_gives_the_same_json_on_both(name: str, hint: Any, value: Any,
                                                  hex_bytes: str) -> None:
    if hint == NDARRAY:
        pytest.importorskip("numpy")
    data = bytes.fromhex(hex_bytes)
    got = [_on(impl, lambda: codec.decode_plain(data)) for impl in _impls()]
    text = [json.dumps(g, sort_keys=True) for g in got]  # JSON-able, and equal
    assert len(set(text)) == 1, text


def test_decode_plain_values() -> None:
    cases: list[tuple[Any, Any]] = [
        ((1, "a"), [1, "a"]),
        ({3, 1, 2}, [1, 2, 3]),
        (b"\x00\xff", {"$bytes": "AP8="}),
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2026-01-02T03:04:05Z"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Decimal("1.50"), "1.50"),
        (2**70, 2**70),
        ({1: [None, True, 1.5]}, {1: [None, True, 1.5]}),
        (Address(city="Paris"), {"city": "Paris"}),
    ]
    for impl in _impls():
        for value, plain in cases:
            data = codec.encode(value)
            assert _on(impl, lambda d=data: codec.decode_plain(d)) == plain, (impl, value)
    ref = codec.encode(ObjectRef("insp.Shelf", 4))
    for impl in _impls():
        assert _on(impl, lambda: codec.decode_plain(ref)) == {"$ref": "insp.Shelf/0/4"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=48))
def test_decode_plain_accepts_or_refuses_random_bytes_alike(data: bytes) -> None:
    outcomes = []
    for impl in _impls():
        try:
            outcomes.append(json.dumps(_on(impl, lambda: codec.decode_plain(data)),
                                       sort_keys=True))
        except SerializationError:
            outcomes.append("refused")
    assert len(set(outcomes)) == 1, (data.hex(), outcomes)


# -- the commands ---------------------------------------------------------------------------


def test_commands_on_a_store(impl: str, tmp_path: Path) -> None:
    store = f"lmdb:{tmp_path / 's'}"
    _fill(tmp_path / "s", impl)
    codec.set_backend(None)

    rc, out, _ = run("classes", store)
    assert rc == 0
    assert out.split("\n")[:2] == ["insp.Note   1 object", "insp.Shelf  2 objects"]

    rc, out, _ = run("objects", store, "insp.Shelf")
    assert rc == 0
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["1", "side-shelf"]  # numeric ids first
    assert "version 2" in lines[0] and "version 1" in lines[1]
    rc, out, err = run("objects", store, "insp.Shelf", "--limit", "1")
    assert rc == 0 and len(out.splitlines()) == 1 and "1 of 2 objects shown" in err

    rc, out, _ = run("get", store, "insp.Shelf", "1", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["version"] == 2 and doc["object_id"] == 1 and doc["partition_id"] == 0
    assert doc["fields"] == {
        "label": "fiction", "count": 3, "books": ["Emma", "Ulysses"], "tags": ["a", "b"],
        "blob": {"$bytes": "AP8="}, "when": "2026-01-02T03:04:05Z",
        "address": {"city": "Paris"}, "neighbour": None,
    }
    assert doc["created"].endswith("Z") and doc["updated"] >= doc["created"]
    rc, out, _ = run("get", store, "insp.Shelf", "side-shelf", "--json")
    assert json.loads(out)["fields"]["neighbour"] == {"$ref": "insp.Shelf/0/1"}
    rc, out, _ = run("get", store, "insp.Shelf", "1")
    assert rc == 0
    assert out.startswith("insp.Shelf/0/1  version 2\n")
    assert '  books     = ["Emma", "Ulysses"]' in out

    rc, out, _ = run("stats", store)
    assert rc == 0
    assert "classes: 2  objects: 3  entries: 17" in out
    assert any(ln.split()[:3] == ["insp.Shelf", "2", "16"] for ln in out.splitlines())

    rc, out, _ = run("verify", store)
    assert (rc, out.strip().splitlines()[-1]) == (
        0, f"verified 3 objects, 17 entries in the lmdb store at {tmp_path / 's'}: 0 corrupt")


def test_verify_and_get_report_corrupt_entries(impl: str, tmp_path: Path) -> None:
    _fill(tmp_path / "s", impl)
    w = LmdbStore(str(tmp_path / "s"))
    w.write_batch([WriteRecord(("insp.Note", 0, 7), 1, {"text": b"\xc1"})])  # not MessagePack
    w.close()
    store = f"lmdb:{tmp_path / 's'}"
    rc, out, _ = run("verify", store)
    assert rc == 1
    assert out.splitlines()[0].startswith("corrupt: insp.Note/0/7 field 'text': ")
    assert out.strip().endswith(": 1 corrupt")
    rc, out, err = run("get", store, "insp.Note", "7", "--json")
    assert rc == 1 and "corrupt entry: insp.Note/0/7 field 'text'" in err
    assert "$corrupt" in json.loads(out)["fields"]["text"]


def test_errors_are_messages_with_exit_status(tmp_path: Path) -> None:
    _fill(tmp_path / "s", "python")
    store = f"lmdb:{tmp_path / 's'}"
    rc, out, err = run("get", store, "insp.Nope", "1")
    assert rc == 1 and "no objects of class 'insp.Nope'" in err and "insp.Shelf" in err
    rc, out, err = run("get", store, "insp.Shelf", "99")
    assert (rc, out) == (1, "") and "no object insp.Shelf/0/99" in err
    rc, _, err = run("objects", store, "insp.Nope")
    assert rc == 1
    rc, _, err = run("get", store, "insp.Shelf", "1", "--partition", "-1")
    assert rc == 2 and "invalid partition_id -1" in err
    rc, _, err = run("get", store, "insp.Shelf", "Not-An-Id")
    assert rc == 2 and "invalid object_id 'Not-An-Id'" in err
    rc, _, err = run("classes", "nonsense:x")
    assert rc == 2 and "storage 'nonsense:x' not understood" in err
    rc, _, err = run("classes", f"lmdb:{tmp_path / 'missing'}")
    assert rc == 2 and "no store there" in err and not (tmp_path / "missing").exists()
    rc, _, err = run("classes", store, "--app", "no_such_module_xyz")
    assert rc == 2 and "--app no_such_module_xyz: cannot import it" in err
    with pytest.raises(SystemExit) as e:
        run("objects", store, "insp.Shelf", "--limit", "-1")
    assert e.value.code == 2


def test_app_module_decodes_with_the_classes_hints(tmp_path: Path) -> None:
    app = tmp_path / "shopapp.py"
    app.write_text(textwrap.dedent("""
        import enum
        from oaas_sdk import OaasObject, oaas

        class Size(enum.Enum):
            S = "s"
            L = "l"

        @oaas.service("Box", package="shopapp")
        class Box(OaasObject):
            size: Size = Size.S
            dims: tuple[int, int] = (0, 0)
    """))
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}", OAAS_NATIVE="off")
    subprocess.run([sys.executable, "-c", (
        "from oaas_sdk import oaas, OaasConfig\n"
        f"oaas.configure(OaasConfig(storage='lmdb:{tmp_path / 's'}'))\n"
        "from shopapp import Box, Size\n"
        "Box.create(1, size=Size.L, dims=(2, 3)).commit()\n")],
        env=env, check=True, cwd=tmp_path, timeout=120)
    w = LmdbStore(str(tmp_path / "s"))  # an entry the class's hint refuses: a str for a tuple
    w.write_batch([WriteRecord(("shopapp.Box", 0, 2), 0,
                               {"size": codec.encode("s"), "dims": codec.encode("wide")})])
    w.close()
    store = f"lmdb:{tmp_path / 's'}"
    rc, out, _ = run("verify", store)
    assert rc == 0  # schema-less, every entry is valid MessagePack
    r = subprocess.run([sys.executable, "-m", "oaas_sdk", "verify", store, "--app", "shopapp"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "corrupt: shopapp.Box/0/2 field 'dims'" in r.stdout
    r = subprocess.run([sys.executable, "-m", "oaas_sdk", "get", store, "shopapp.Box", "1",
                        "--app", "shopapp", "--json"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fields"] == {"size": "l", "dims": [2, 3]}


def test_console_script_reads_a_store_another_process_has_open(impl: str,
                                                                tmp_path: Path) -> None:
    """The installed ``oaas-sdk`` command, on a store a running service holds open: it
    sees the committed objects and writes nothing; errors carry no traceback."""
    script = Path(sys.executable).parent / "oaas-sdk"
    if not script.exists():
        pytest.skip("the oaas-sdk script is not installed next to this interpreter")
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from oaas_sdk import oaas, OaasConfig, OaasObject
            oaas.configure(OaasConfig(storage="lmdb:{tmp_path / 's'}"))

            @oaas.service("Live", package="held")
            class Live(OaasObject):
                n: int = 0

            for i in range(5):
                Live.create(i, n=i).commit()
            print("ready", flush=True)
            sys.stdin.readline()
            Live.create(99, n=99).commit()
            print("done", flush=True)
        """)],
        env=_env(impl), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        before = sorted(os.listdir(tmp_path / "s"))
        r = subprocess.run([str(script), "objects", f"lmdb:{tmp_path / 's'}", "held.Live"],
                           env=_env(impl), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert [ln.split()[0] for ln in r.stdout.splitlines()] == ["0", "1", "2", "3", "4"]
        r = subprocess.run([str(script), "get", f"lmdb:{tmp_path / 's'}", "held.Live", "5"],
                           env=_env(impl), capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith("oaas-sdk: error: no object held.Live/0/5")
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "done"  # the writer was not disturbed
        assert sorted(os.listdir(tmp_path / "s")) == before
    finally:
        writer.kill()
        writer.wait(timeout=30)


def _readme_sessions() -> list[tuple[list[str], str]]:
    """The inspector sessions shown in the README: (argv, expected output)."""
    readme = (ROOT / "README.md").read_text()
    sessions: list[tuple[list[str], str]] = []
    for block in re.findall(r"```text\n(.*?)```", readme, flags=re.S):
        lines = textwrap.dedent(block).splitlines()
        for line in lines:
            if line.startswith("$ python -m oaas_sdk "):
                sessions.append((line.split()[4:], ""))
            elif sessions:
                argv, text = sessions[-1]
                sessions[-1] = (argv, text + line + "\n")
    return sessions


def _masked(text: str) -> str:
    """Without what changes from run to run: times; the LMDB map and file sizes."""
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "<time>", text)
    return re.sub(r"map size: \d+  file size: \d+", "map size: <n>  file size: <n>", text)


def test_readme_shows_what_the_inspector_prints_for_the_quickstart(impl: str,
                                                                    tmp_path: Path) -> None:
    sessions = _readme_sessions()
    assert [s[0][0] for s in sessions] == ["classes", "get", "get", "stats", "verify"]
    env = _env(impl)
    env.pop("OAAS_STORAGE", None)  # the quickstart uses its default store ./.oaas
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "examples.quickstart"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    for argv, expected in sessions:
        r = subprocess.run([sys.executable, "-m", "oaas_sdk", *argv], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert _masked(r.stdout) == _masked(expected), argv
