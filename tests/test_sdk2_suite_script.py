"""scripts/sdk2_suite.py without the network: the import rewrite, the grouping of tests and
the counting of tests in modules that fail to import (the download itself is not run)."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "sdk2_suite.py"


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sdk2_suite", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rewrite_points_imports_at_oaas_sdk(suite: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "unit").mkdir(parents=True)
    (src / "unit" / "test_a.py").write_text(textwrap.dedent("""\
        from oaas_sdk2_py.simplified import oaas, OaasObject
        from oaas_sdk2_py import OaasConfig
        import oaas_sdk2_py.simplified.serialization as ser
        name = "oaas_sdk2_pyx"  # not a module reference of its own
        """))
    (src / "conftest.py").write_text("import pytest\n")
    out = tmp_path / "out"
    out.mkdir()
    assert suite.rewrite(src, out) == 1
    text = (out / "tests" / "unit" / "test_a.py").read_text()
    assert "from oaas_sdk import oaas, OaasObject" in text
    assert "from oaas_sdk import OaasConfig" in text
    assert "import oaas_sdk.serialization as ser" in text
    assert '"oaas_sdk2_pyx"' in text
    assert (out / "pytest.ini").exists() and (out / "sdk2_suite_reporter.py").exists()


def test_groups(suite: ModuleType) -> None:
    assert suite.group_of("tests/unit/test_mock.py::TestMock::test_x") == "simplified"
    assert suite.group_of("tests/server/test_serve.py::TestServe::test_agent") == "server"
    for path in ["unit/test_enhanced_serialization.py", "unit/test_dict_functions.py",
                 "unit/test_event.py", "integration/test_simplified_compatibility.py"]:
        assert suite.group_of(f"tests/{path}::test_y") == "out-of-scope"


def test_tests_of_a_module_that_does_not_import(suite: ModuleType, tmp_path: Path) -> None:
    f = tmp_path / "test_m.py"
    f.write_text(textwrap.dedent("""\
        import pytest

        def test_a(): ...
        async def test_b(): ...
        def helper(): ...

        class TestC:
            @pytest.mark.parametrize("v", [1, 2, 3])
            def test_d(self, v): ...
            def not_a_test(self): ...

        class Other:
            def test_e(self): ...
        """))
    assert suite._test_names(f) == ["test_a", "test_b", "TestC::test_d[0]", "TestC::test_d[1]",
                                    "TestC::test_d[2]"]
    assert suite._test_names(tmp_path / "missing.py") == []
