"""The decorators keep the decorated signatures for type checkers (docs/api.md): mypy
(``--strict``) and pyright (basedpyright, "standard" mode) run on a sample service see
``await c.increment(2)`` as ``int``, report wrong argument types, reveal no ``Any`` in what
decorated calls return, and report nothing else."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SAMPLE = '''
from typing import Optional

from oaas_sdk import OaasObject, getter, oaas, setter


@oaas.service("Counter", package="typing")
class Counter(OaasObject):
    count: int = 0
    peer: Optional["Counter"] = None

    @oaas.method
    async def increment(self, amount: int = 1) -> int:
        self.count += amount
        return self.count

    @oaas.method()
    def bump(self) -> int:
        self.count += 1
        return self.count

    @oaas.method("describe", stateless=True, timeout=2.0)
    async def describe(self, prefix: str) -> str:
        return f"{prefix}{self.count}"

    @oaas.method(retry_count=2, retry_delay=0.1)
    def label(self, *, upper: bool = False) -> str:
        return "X" if upper else "x"

    @oaas.function()
    async def release() -> str:
        return "1.0"

    @oaas.function
    @staticmethod  # for pyright, which otherwise checks x as if it were self
    def double(x: int) -> int:
        return 2 * x

    @oaas.function
    def zero() -> int:
        return 0

    @oaas.getter("count")
    async def get_count(self) -> int:
        return self.count

    @getter
    def get_peer(self) -> Optional["Counter"]:
        return self.peer

    @oaas.setter()
    async def set_count(self, value: int) -> int:
        return value

    @setter("count")
    def put_count(self, value: int) -> None:
        pass

    @oaas.constructor()
    async def init(self, start: int) -> None:
        self.count = start


async def main() -> None:
    c = Counter.create()
    reveal_type(c)  # R1
    reveal_type(await c.increment(2))  # R2
    reveal_type(c.bump())  # R3
    reveal_type(await c.describe("n="))  # R4
    reveal_type(c.label(upper=True))  # R5
    reveal_type(await Counter.release())  # R6
    reveal_type(Counter.double(3))  # R7
    reveal_type(await c.get_count())  # R8
    reveal_type(c.get_peer())  # R9
    reveal_type(await c.set_count(3))  # R10
    reveal_type(Counter.load(1))  # R11
    reveal_type(Counter.zero())  # R12
    await c.init(0)
    await c.increment("two")  # E1
    c.bump(1)  # E2
    await c.describe(prefix=3)  # E3
    c.label(True)  # E4
    Counter.double("3")  # E5
    await c.set_count("3")  # E6
    c.put_count(None)  # E7
    await c.increment(amount=1, extra=2)  # E8
'''

EXPECTED_TYPES = {
    "R1": r"(typing_sample\.)?Counter",
    "R2": r"(builtins\.)?int",
    "R3": r"(builtins\.)?int",
    "R4": r"(builtins\.)?str",
    "R5": r"(builtins\.)?str",
    "R6": r"(builtins\.)?str",
    "R7": r"(builtins\.)?int",
    "R8": r"(builtins\.)?int",
    "R9": r"(typing_sample\.)?Counter \| None",
    "R10": r"(builtins\.)?int",
    "R11": r"(typing_sample\.)?Counter",
    "R12": r"(builtins\.)?int",
}


Report = dict[str, list[str]]  # marker (R1, E1, ...) or "line N: ..." -> "kind: message"


def _by_marker(src: Path, found: list[tuple[int, str, str]]) -> Report:
    lines = src.read_text().splitlines()
    report: Report = {}
    for line, kind, message in found:
        marker = re.search(r"# ([RE]\d+)$", lines[line - 1])
        key = marker.group(1) if marker else f"line {line}: {lines[line - 1]}"
        report.setdefault(key, []).append(f"{kind}: {message}")
    return report


def _sample(d: Path) -> Path:
    src = d / "typing_sample.py"
    src.write_text(textwrap.dedent(SAMPLE))
    return src


def _mypy(d: Path) -> Report:
    pytest.importorskip("mypy")
    src = _sample(d)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "/dev/null",
         "--cache-dir", str(d / ".mypy_cache"), "--no-error-summary", "--hide-error-context",
         str(src)],
        cwd=d, capture_output=True, text=True, timeout=300)
    assert "error" not in proc.stderr.lower(), proc.stderr
    found = []
    for out in proc.stdout.splitlines():
        m = re.match(r".*typing_sample\.py:(\d+): (note|error): (.*)", out)
        if m is not None:
            kind = "revealed" if m.group(3).startswith("Revealed type is") else m.group(2)
            text = m.group(3).split('"')[1] if kind == "revealed" else m.group(3)
            found.append((int(m.group(1)), kind, text))
    return _by_marker(src, found)


def _pyright(d: Path) -> Report:
    exe = shutil.which("basedpyright", path=str(Path(sys.executable).parent)) \
        or shutil.which("basedpyright")
    if exe is None:
        pytest.skip("basedpyright (pyright) is not installed")
    src = _sample(d)
    (d / "pyrightconfig.json").write_text(
        json.dumps({"typeCheckingMode": "standard", "pythonVersion": "3.11"}))
    proc = subprocess.run([exe, "--outputjson", "--pythonpath", sys.executable, str(src)],
                          cwd=d, capture_output=True, text=True, timeout=300)
    out = json.loads(proc.stdout)
    found = []
    for diag in out["generalDiagnostics"]:
        line = diag["range"]["start"]["line"] + 1
        msg = diag["message"]
        m = re.fullmatch(r'Type of ".*" is "(.*)"', msg, flags=re.S)
        if diag["severity"] == "information" and m is not None:
            found.append((line, "revealed", m.group(1)))
        else:
            found.append((line, diag["severity"], msg))
    return _by_marker(src, found)


@pytest.fixture(scope="module", params=["mypy", "pyright"])
def report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The checker's revealed types and errors on the sample, by marker."""
    d = tmp_path_factory.mktemp(f"typing-{request.param}")
    return _mypy(d) if request.param == "mypy" else _pyright(d)


@pytest.mark.parametrize("marker", sorted(EXPECTED_TYPES))
def test_decorated_calls_keep_their_types(report: Report, marker: str) -> None:
    got = report.get(marker, [])
    revealed = [n.split(": ", 1)[1] for n in got if n.startswith("revealed: ")]
    assert len(revealed) == 1, got
    assert re.fullmatch(EXPECTED_TYPES[marker], revealed[0]), (marker, revealed[0])
    assert "Any" not in revealed[0]
    assert [n for n in got if not n.startswith("revealed: ")] == []


def test_wrong_arguments_are_reported(report: Report) -> None:
    for marker in [f"E{i}" for i in range(1, 9)]:
        errors = [e for e in report.get(marker, []) if e.startswith("error")]
        assert errors, f"{marker}: nothing reported"


def test_nothing_else_is_reported(report: Report) -> None:
    unexpected = {k: v for k, v in report.items() if not re.fullmatch(r"[RE]\d+", k)}
    assert unexpected == {}


def test_the_sample_runs(impl: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample is a working service, not only something mypy accepts."""
    import asyncio
    import importlib

    from oaas_sdk import OaasConfig, oaas

    src = textwrap.dedent(SAMPLE).split("async def main()")[0].replace(
        'package="typing"', 'package="typingrun"')
    (tmp_path / "typing_run_sample.py").write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "typing_run_sample", raising=False)
    Counter = importlib.import_module("typing_run_sample").Counter
    oaas.configure(OaasConfig(mock_mode=True, native="on" if impl == "native" else "off"))

    async def run() -> tuple[object, ...]:
        c = Counter.create()
        d = Counter.create()
        await c.init(1)
        c.peer = d
        return (await c.increment(2), c.bump(), await c.describe("n="), c.label(upper=True),
                await Counter.release(), Counter.double(3), await c.set_count(5),
                await c.get_count(), c.get_peer() is d, Counter.zero())

    try:
        assert asyncio.run(run()) == (3, 4, "n=4", "X", "1.0", 6, 5, 5, True, 0)
    finally:
        oaas.configure(OaasConfig(mock_mode=True, native="off"))
