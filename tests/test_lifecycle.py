"""What users expect of the package around their objects: ``repr()`` of an object, logging
through the ``oaas_sdk`` logger (both engines), and write-back surviving SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

from oaas_sdk import OaasConfig, OaasObject, oaas
from oaas_sdk.runtime import current
from oaas_sdk.stores import WriteRecord
from tests.conftest import Sdk

ROOT = Path(__file__).resolve().parent.parent


@oaas.service("Shown", package="life")
class Shown(OaasObject):
    n: int = 0
    title: str = ""
    items: list[int] = []
    other: Optional[Shown] = None


# -- repr -----------------------------------------------------------------------------------


def _tracking(obj: OaasObject) -> tuple[object, ...]:
    rt = current()
    st = obj._oaas_state
    return (set(st.live), set(st.dirty), dict(st.parked).keys(),
            id(obj) in rt.touched, id(obj) in rt.dirty)


def test_repr_shows_class_id_and_fields(sdk: Sdk) -> None:
    a = Shown.create(1, n=3, title="t" * 500, items=list(range(50)))
    text = repr(a)
    assert text.startswith("Shown(object_id=1, n=3, title='ttt")
    assert "items=[0, 1, 2, 3, 4, 5, 6, 7, ...]" in text and "other=None)" in text
    assert len(text) < 250  # long values are shortened
    b = Shown.create("b", other=a, partition_id=2)
    assert repr(b).startswith("Shown(object_id='b', partition_id=2, n=0")
    assert "other=<Shown life.Shown/0/1>" in repr(b)


def test_repr_leaves_tracking_alone(sdk: Sdk) -> None:
    a = Shown.create(1, items=[1, 2])
    a.other = a
    a.commit()  # fields parked: the next read would mark the object
    before = _tracking(a)
    assert "items=[1, 2]" in repr(a) and "other=<Shown life.Shown/0/1>" in repr(a)
    assert _tracking(a) == before

    sdk.reconfigure()  # a new process: loaded, nothing decoded yet
    b = Shown.load(1)
    before = _tracking(b)
    text = repr(b)
    assert "items=[1, 2]" in text
    assert "other=ObjectRef('life.Shown', 1, partition_id=0)" in text  # nothing loaded
    assert _tracking(b) == before
    assert current().stats()["live_objects"] == 1
    commits = oaas.stats()["commits"]
    b.commit()  # nothing read, nothing to write
    oaas.flush()
    assert oaas.stats()["commits"] == commits


def test_repr_of_a_corrupt_entry_does_not_raise(sdk: Sdk) -> None:
    Shown.create(1, items=[1]).commit()
    oaas.flush()
    sdk.reconfigure()
    b = Shown.load(1)
    b._oaas_state.committed["items"] = b"\xc1"
    assert "items=<SerializationError>" in repr(b)


# -- logging --------------------------------------------------------------------------------


def test_package_logger_has_a_null_handler() -> None:
    assert any(isinstance(h, logging.NullHandler)
               for h in logging.getLogger("oaas_sdk").handlers)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "oaas_sdk" and r.levelno == logging.ERROR]


def test_failed_write_back_is_logged_by_either_engine(lmdb_sdk: Sdk,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    lmdb_sdk.reconfigure(durability="async")
    Shown.create(1).commit()
    oaas.flush()
    caplog.set_level(logging.ERROR, logger="oaas_sdk")
    # Another writer's commit, acknowledged at once, refused when written.
    t = current().engine.submit(WriteRecord(("life.Shown", 0, 1), 7, {"n": b"\x01"}))
    t.wait()  # acknowledged: no error for the writer
    oaas.flush()  # the failure is logged by the time flush returns
    msgs = _errors(caplog)
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith("write-back of life.Shown/0/1 failed after acknowledgement: ")
    assert oaas.stats()["failed_commits"] == 1


def test_failed_batch_is_logged_by_either_engine(impl: str, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    small = 1 << 16  # the map cannot grow: a big commit fails the whole batch
    sdk = Sdk(impl, "lmdb", tmp_path / "s")
    sdk.reconfigure(durability="async",
                    storage=f"lmdb:{tmp_path / 's'}?map_size={small}&max_map_size={small}")
    caplog.set_level(logging.ERROR, logger="oaas_sdk")
    try:
        Shown.create(1, title="x" * (4 * small)).commit()
        oaas.flush()
        msgs = _errors(caplog)
        assert any(m.startswith("batch of 1 commits failed: ") and "full" in m
                   for m in msgs), msgs
        assert any(m.startswith("write-back of life.Shown/0/1 failed") for m in msgs), msgs
    finally:
        oaas.configure(OaasConfig(mock_mode=True, native="off"))


# -- SIGTERM --------------------------------------------------------------------------------

WRITER = """
import sys
from oaas_sdk import OaasConfig, OaasObject, oaas

@oaas.service("Item", package="term")
class Item(OaasObject):
    n: int = 0

oaas.configure(OaasConfig(storage=sys.argv[1], durability="async", batch_max_delay_ms=300))
i = 0
while True:  # until killed
    Item.create(i, n=i).commit()  # write-back: acknowledged once queued
    print(i, flush=True)
    i += 1
"""


def _writer_env(impl: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OAAS_NATIVE="on" if impl == "native" else "off")
    env.pop("OAAS_STORAGE", None)
    return env


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("own_handler", [False, True], ids=["sdk-handler", "user-handler"])
def test_sigterm_flushes_write_back(impl: str, tmp_path: Path, own_handler: bool) -> None:
    """A writer killed with SIGTERM keeps every commit it acknowledged and exits with the
    SIGTERM status; a handler of the application's own is left in place."""
    storage = f"lmdb:{tmp_path / 's'}"
    code = WRITER
    if own_handler:  # installed before the SDK's runtime: the SDK must not replace it
        # os._exit: a SystemExit raised by a handler that interrupts a finalizer
        # (OaasObject.__del__) is ignored by Python ("Exception ignored in"), and the
        # writer would go on.
        code = textwrap.dedent("""
            import os, signal
            signal.signal(signal.SIGTERM, lambda s, f: os._exit(3))
        """) + code
    w = subprocess.Popen([sys.executable, "-c", code, storage], env=_writer_env(impl),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert w.stdout is not None
    acked = []
    try:
        while len(acked) < 200:  # well inside one 300 ms batch window
            line = w.stdout.readline()
            assert line, w.stderr.read() if w.stderr else ""
            acked.append(int(line))
        w.send_signal(signal.SIGTERM)
        rest, err = w.communicate(timeout=60)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait(timeout=30)
    lines = rest.split()
    if own_handler:
        assert w.returncode == 3, err  # the application's handler ran, not the SDK's
        return
    assert w.returncode == -signal.SIGTERM, err
    acked += [int(x) for x in lines]
    r = subprocess.run([sys.executable, "-m", "oaas_sdk", "objects", storage, "term.Item",
                        "--limit", "0"], env=_writer_env(impl), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    stored = {int(ln.split()[0]) for ln in r.stdout.splitlines()}
    missing = sorted(set(acked) - stored)
    assert not missing, f"{len(missing)} acknowledged commits lost, e.g. {missing[:5]}"
