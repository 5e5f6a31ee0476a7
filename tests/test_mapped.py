"""Memory-mapped fields: zero-copy views of a file of the store, flushed at commit."""

from __future__ import annotations

import numpy as np
import pytest

from oaas_sdk import Mapped, OaasObject, mapped, oaas
from oaas_sdk.mapped import PyMappedFile, mapped_path

from .test_persistence import native_flag, run_py


@oaas.service("Frames", package="test")
class Frames(OaasObject):
    title: str = ""
    grid: Mapped = mapped(shape=(64, 32), dtype="float32")
    blob: Mapped = mapped(size=4096)


def test_mapped_fields_are_views_persisted_at_commit(sdk):
    f = Frames.create(obj_id=1)
    assert "grid" not in Frames._oaas_fields and Frames._oaas_mapped == ("grid", "blob")
    assert isinstance(f.grid, np.ndarray) and f.grid.shape == (64, 32)
    assert f.grid.flags.writeable and isinstance(f.blob, memoryview) and not f.blob.readonly
    f.grid[3, 4] = 2.5
    f.blob[:5] = b"hello"
    f.title = "t"
    f.commit()
    if sdk.store != "lmdb":  # memory and the Redis stores: anonymous mappings
        assert mapped_path(f, "grid") is None
        return
    path = mapped_path(f, "grid")
    assert path is not None
    on_disk = np.fromfile(path, dtype="float32").reshape(64, 32)  # flushed by the commit
    assert on_disk[3, 4] == 2.5 and on_disk.sum() == 2.5
    sdk.reconfigure()
    g = Frames.load(1)
    assert g.grid[3, 4] == 2.5 and bytes(g.blob[:5]) == b"hello"


def test_assigning_copies_into_the_mapping(lmdb_sdk):
    f = Frames.create(obj_id=2)
    f.blob = bytes(range(256)) * 16
    with pytest.raises(ValueError, match="expected 4096 bytes"):
        f.blob = b"short"
    f.commit()
    assert bytes(f.blob[:3]) == b"\x00\x01\x02"


def test_both_implementations_map_the_same_file(impl, tmp_path):
    store = tmp_path / "s"
    other = "python" if impl == "native" else "native"
    from .conftest import _need_impl

    _need_impl("native")
    for who, value in ((impl, 1.5), (other, 3.0)):
        r = run_py(f"""
            from oaas_sdk import oaas, OaasConfig
            from tests.test_mapped import Frames
            oaas.configure(OaasConfig(storage="lmdb:{store}", native="{native_flag(who)}"))
            f = Frames.load_or_create(9)
            print(float(f.grid.sum()))
            f.grid[0, 0] += {value}
            f.commit()
        """)
        assert r.returncode == 0, r.stderr
        assert float(r.stdout) == (0.0 if who == impl else 1.5)


def test_size_mismatch_is_refused(tmp_path):
    p = tmp_path / "m" / "f"
    PyMappedFile(str(p), 128).flush()
    with pytest.raises(ValueError, match="declares 256"):
        PyMappedFile(str(p), 256)
