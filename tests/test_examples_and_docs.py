"""The README's code and the example services run, so they never rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _run_example(name: str, cwd: Path, impl: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OAAS_NATIVE="on" if impl == "native" else "off")
    env.pop("OAAS_STORAGE", None)  # the examples use the embedded default store ./.oaas
    return subprocess.run([sys.executable, "-m", f"examples.{name}"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_quickstart_keeps_state_across_runs(tmp_path, impl):
    first = _run_example("quickstart", tmp_path, impl)
    assert first.returncode == 0, first.stderr
    assert "this is run 1;" in first.stdout
    second = _run_example("quickstart", tmp_path, impl)
    assert second.returncode == 0, second.stderr
    assert "this is run 2;" in second.stdout
    assert "greeted 1 times before" in second.stdout
    assert (tmp_path / ".oaas" / "data.mdb").exists()


def test_bank_conserves_total_across_runs(tmp_path, impl):
    for _ in range(2):
        r = _run_example("bank", tmp_path, impl)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "conserved" in r.stdout
    ledger = re.search(r"ledger entries so far: (\d+)", r.stdout)
    assert ledger is not None and int(ledger.group(1)) > 0


def test_telemetry_accumulates_across_runs(tmp_path, impl):
    r1 = _run_example("telemetry", tmp_path, impl)
    assert r1.returncode == 0, r1.stderr
    assert "sensor-0: 250 samples total" in r1.stdout
    r2 = _run_example("telemetry", tmp_path, impl)
    assert r2.returncode == 0, r2.stderr
    assert "sensor-0: 500 samples total" in r2.stdout


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_guide_code_runs(tmp_path, monkeypatch):
    blocks = _python_blocks(README)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        ns: dict[str, object] = {"__name__": "readme"}
        exec(compile(block, "README.md", "exec", dont_inherit=True), ns)
    assert (tmp_path / ".oaas" / "data.mdb").exists()


def test_readme_test_command_is_what_ci_runs():
    cmds = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert len(cmds) == 2, "the README keeps exactly two commands for a fresh clone"
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1].strip() in ci
    assert "examples." in cmds[0]


@pytest.fixture(autouse=True)
def _reset():
    yield
    from oaas_sdk import OaasConfig, oaas

    oaas.configure(OaasConfig(mock_mode=True, native="off"))


@pytest.mark.parametrize("doc", ["guide.md", "mapped.md"])
def test_docs_code_runs(doc, tmp_path, monkeypatch):
    from oaas_sdk import OaasConfig, oaas

    oaas.configure(OaasConfig(storage=f"lmdb:{tmp_path / 'store'}"))
    text = (ROOT / "docs" / doc).read_text()
    blocks = _python_blocks(text)
    assert blocks
    monkeypatch.chdir(tmp_path)
    ns: dict[str, object] = {"__name__": "docs"}
    for block in blocks:
        exec(compile(block, f"docs/{doc}", "exec", dont_inherit=True), ns)
