"""Run oaas-sdk2-py 0.3.6's own test suite against oaas-sdk, to measure API compatibility.

Downloads the oaas-sdk2-py sdist from PyPI into a temporary directory (nothing of it is
kept or copied into this repository), takes its ``tests/``, rewrites the imports
``oaas_sdk2_py.simplified`` and ``oaas_sdk2_py`` to ``oaas_sdk``, runs pytest on it with
the current interpreter and prints the passed/failed counts, overall and per group:

- ``simplified``: tests of its simplified public API, the surface oaas-sdk promises to be
  source-compatible with (docs/api.md);
- ``server``: its server and agent tests;
- ``out-of-scope``: its internal serializer module, its legacy ``Oparaca``/``BaseObject``
  API and its platform trigger tests, which oaas-sdk does not claim.

Usage::

    python scripts/sdk2_suite.py [--native on|off|auto] [--keep DIR] [-v] [-- PYTEST_ARGS]

``--native`` sets ``OAAS_NATIVE`` for the run. ``--keep DIR`` writes the rewritten suite to
``DIR`` (outside this repository) and leaves it there for debugging; otherwise a
temporary directory is used and removed. ``-v`` prints each test's outcome.
Needs network access to PyPI (``pip download``). Exit status: 0 when every test of the
``simplified`` group passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

VERSION = "0.3.6"

# Test files (relative to tests/) whose tests are outside oaas-sdk's compatibility claim.
OUT_OF_SCOPE = {
    "unit/test_enhanced_serialization.py": "internal serializer module",
    "unit/test_dict_functions.py": "legacy Oparaca/BaseObject API",
    "unit/test_event.py": "platform triggers (oprc_py)",
    # Imports Oparaca/BaseObject at module level, so none of its tests runs without them.
    "integration/test_simplified_compatibility.py": "legacy Oparaca/BaseObject API",
}
SERVER = ("server/",)

_IMPORTS = [
    (re.compile(r"\boaas_sdk2_py\.simplified\b"), "oaas_sdk"),
    (re.compile(r"\boaas_sdk2_py\b"), "oaas_sdk"),
]

# Their pytest settings (pyproject [tool.pytest.ini_options]), minus verbosity.
_PYTEST_INI = """\
[pytest]
asyncio_mode = auto
testpaths = tests
python_files = test_*.py
markers =
    unit: fast, isolated tests (mock-only)
    integration: multi-component flows in mock mode
    server: requires real server/agent lifecycle
    slow: longer-running tests
    mock_only: relies on mock mode explicitly
"""

# Collects each test's outcome into a JSON file (pytest's own hooks; no plugin needed).
_REPORTER = '''\
import json, os

_OUT = {}


def pytest_runtest_logreport(report):
    key = report.nodeid
    if report.when == "call" or report.outcome != "passed":
        if report.outcome == "skipped" and report.when == "setup":
            _OUT[key] = "skipped"
        elif report.when == "call" or key not in _OUT:
            _OUT[key] = report.outcome


def pytest_collectreport(report):
    if report.failed:
        _OUT[report.nodeid or "<collection>"] = "error"


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["SDK2_SUITE_RESULTS"], "w") as f:
        json.dump(_OUT, f)
'''


def download(dest: Path) -> Path:
    """Download and unpack the sdist into ``dest``; return the unpacked project root."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", ":all:", f"oaas-sdk2-py=={VERSION}", "-d", str(dest)],
                   check=True)
    archive = next(dest.glob("oaas_sdk2_py-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / f"oaas_sdk2_py-{VERSION}"


def rewrite(src_tests: Path, out: Path) -> int:
    """Copy ``src_tests`` to ``out/tests`` with the imports rewritten; return files changed."""
    target = out / "tests"
    shutil.copytree(src_tests, target)
    changed = 0
    for path in target.rglob("*.py"):
        text = path.read_text()
        new = text
        for pat, repl in _IMPORTS:
            new = pat.sub(repl, new)
        if new != text:
            path.write_text(new)
            changed += 1
    (out / "pytest.ini").write_text(_PYTEST_INI)
    (out / "sdk2_suite_reporter.py").write_text(_REPORTER)
    return changed


def group_of(nodeid: str) -> str:
    rel = nodeid.removeprefix("tests/")
    path = rel.split("::", 1)[0]
    if path in OUT_OF_SCOPE:
        return "out-of-scope"
    if path.startswith(SERVER):
        return "server"
    return "simplified"


def run(out: Path, native: str, pytest_args: list[str]) -> dict[str, str]:
    results = out / "results.json"
    env = dict(os.environ)
    env["OAAS_NATIVE"] = native
    env["SDK2_SUITE_RESULTS"] = str(results)
    env["PYTHONPATH"] = os.pathsep.join([str(out), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("OAAS_STORAGE", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "--continue-on-collection-errors",
           "-p", "sdk2_suite_reporter", "-p", "no:cacheprovider", "-p", "no:randomly",
           "--rootdir", str(out), "-c", str(out / "pytest.ini"), *pytest_args]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
    if not results.exists():
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit("pytest did not report results")
    (out / "pytest-output.txt").write_text(proc.stdout + proc.stderr)
    outcomes: dict[str, str] = json.loads(results.read_text())
    # A module that fails to import reports one error; count each of its tests as failed.
    for nodeid in [n for n, o in outcomes.items() if o == "error" and "::" not in n]:
        names = _test_names(out / nodeid)
        if names:
            del outcomes[nodeid]
            outcomes.update({f"{nodeid}::{n}": "error" for n in names})
    return outcomes


def _test_names(path: Path) -> list[str]:
    """Test function names (``Class::test``) defined in a test file, found without importing it."""
    if not path.is_file():
        return []
    names: list[str] = []

    def add(prefix: str, fn: ast.stmt) -> None:
        if not (isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                and fn.name.startswith("test")):
            return
        cases = 1
        for dec in fn.decorator_list:  # @pytest.mark.parametrize(names, [literal list])
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize" \
                    and len(dec.args) > 1 and isinstance(dec.args[1], ast.List | ast.Tuple):
                cases *= len(dec.args[1].elts)
        base = prefix + fn.name
        names.extend([base] if cases == 1 else [f"{base}[{i}]" for i in range(cases)])

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for f in node.body:
                add(f"{node.name}::", f)
        else:
            add("", node)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--native", choices=["on", "off", "auto"], default="auto")
    ap.add_argument("--keep", type=Path, help="write the rewritten suite here and keep it")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="sdk2-suite-"))
    try:
        root = download(tmp / "dl")
        out = args.keep.resolve() if args.keep else tmp / "suite"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        rewrite(root / "tests", out)
        outcomes = run(out, args.native, args.pytest_args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    by_group: dict[str, Counter[str]] = {}
    for nodeid, outcome in sorted(outcomes.items()):
        g = group_of(nodeid)
        by_group.setdefault(g, Counter())[outcome] += 1
        if args.verbose:
            print(f"{outcome:8} {g:13} {nodeid}")
    total: Counter[str] = Counter(outcomes.values())
    print(f"oaas-sdk2-py {VERSION} suite against oaas_sdk (OAAS_NATIVE={args.native}):")
    for g in ("simplified", "server", "out-of-scope"):
        c = by_group.get(g, Counter())
        print(f"  {g:13} {c['passed']} passed, {c['failed'] + c['error']} failed, "
              f"{c['skipped']} skipped")
    print(f"{total['passed']} passed, {total['failed'] + total['error']} failed, "
          f"{total['skipped']} skipped")
    simplified = by_group.get("simplified", Counter())
    return 0 if simplified["failed"] + simplified["error"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
