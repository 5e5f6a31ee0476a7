"""The pytest plugin (``oaas_sdk.testing``, entry point ``pytest11``), run as a user runs it:
a test file of a user project in a fresh pytest process that finds the plugin installed."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

USER_CLASSES = textwrap.dedent("""
    import subprocess
    import sys

    import pytest
    from oaas_sdk import OaasConfig, OaasObject, oaas

    @oaas.service("Counter", package="plugged")
    class Counter(OaasObject):
        count: int = 0
        log: list[str] = []

        @oaas.method()
        async def inc(self) -> int:
            self.count += 1
            self.log.append("inc")
            return self.count
""")


@pytest.fixture
def project(pytester: pytest.Pytester, impl: str,
            monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("OAAS_NATIVE", "on" if impl == "native" else "off")
    monkeypatch.delenv("OAAS_STORAGE", raising=False)  # the user's environment: no override
    pytester.makeini("[pytest]\nasyncio_mode = auto\n"
                     "asyncio_default_fixture_loop_scope = function\n")
    return pytester


def test_fixture_runtime_per_test_memory_by_default(project: pytest.Pytester) -> None:
    project.makepyfile(test_user=USER_CLASSES + textwrap.dedent("""
        async def test_first(oaas_runtime):
            assert oaas_runtime is oaas
            assert oaas.config.storage == "memory"
            c = Counter.create(1)
            assert await c.inc() == 1
            assert Counter.load(1).log == ["inc"]

        def test_second_starts_empty(oaas_runtime):
            assert not Counter.exists(1)

        @pytest.mark.oaas(auto_commit=False, native="off")
        def test_marker_config(oaas_runtime):
            assert oaas.config.auto_commit is False
            assert oaas.stats()["implementation"] == "python"

        def test_no_fixture_keeps_what_was_there():
            # the configuration before the first fixture (none: the environment's) is back
            assert oaas.config.storage == OaasConfig().storage
    """))
    result = project.runpytest_subprocess("-p", "no:randomly", "--strict-markers")
    result.assert_outcomes(passed=4)


def test_lmdb_marker_gives_a_temporary_store_flushed_after_the_test(
        project: pytest.Pytester) -> None:
    project.makepyfile(test_user=USER_CLASSES + textwrap.dedent("""
        seen = {}

        @pytest.mark.oaas(storage="lmdb", durability="async", batch_max_delay_ms=5000)
        async def test_writes(oaas_runtime, tmp_path):
            storage = oaas.config.storage
            assert storage.startswith("lmdb:") and oaas.config.durability == "async"
            for i in range(20):
                c = Counter.create(i)
                await c.inc()  # write-back: acknowledged, written within 5 s
            seen["storage"] = storage

        def test_the_store_has_every_commit():
            # Another process reads it: the fixture flushed and closed the store.
            r = subprocess.run([sys.executable, "-m", "oaas_sdk", "objects",
                                seen["storage"], "plugged.Counter", "--limit", "0"],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            assert len(r.stdout.splitlines()) == 20

        @pytest.mark.oaas(storage="lmdb")
        def test_each_test_its_own_store(oaas_runtime):
            assert oaas.config.storage != seen["storage"]
            assert not Counter.exists(1)
    """))
    result = project.runpytest_subprocess("-p", "no:randomly", "--strict-markers")
    result.assert_outcomes(passed=3)


def test_bad_marker_is_a_usage_error_naming_it(project: pytest.Pytester) -> None:
    project.makepyfile(test_user=USER_CLASSES + textwrap.dedent("""
        @pytest.mark.oaas(durability="maybe")
        def test_bad(oaas_runtime):
            pass

        @pytest.mark.oaas("lmdb")
        def test_positional(oaas_runtime):
            pass
    """))
    result = project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*durability*maybe*", "*keyword arguments only*"])


def test_marker_is_registered(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.oaas(storage=*"])


def test_the_guides_testing_example_passes(project: pytest.Pytester) -> None:
    """docs/guide.md's test functions, with the guide's classes, in a user's project."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    classes = next(b for b in blocks if "class Task(OaasObject)" in b)
    tests = next(b for b in blocks if "oaas_runtime" in b)
    project.makepyfile(test_guide=classes + "\n" + tests)
    result = project.runpytest_subprocess("-p", "no:randomly", "--strict-markers")
    result.assert_outcomes(passed=2)
