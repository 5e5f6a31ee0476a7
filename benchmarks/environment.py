"""The machine a run happened on, package versions, and the oaas-sdk2-py virtual environment.

oaas-sdk2-py runs from its own virtual environment so that it never shares an interpreter
(or a dependency set) with oaas-sdk: :func:`ensure_sdk2_venv` creates it with
``python -m venv`` in a cache directory and installs the pinned release from PyPI with pip.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "package_versions", "git_revision", "Sdk2Env", "ensure_sdk2_venv",
           "DEFAULT_SDK2_VENV", "SDK2_VERSION"]

#: The oaas-sdk2-py release compared against (its "simplified interface" is the API oaas-sdk
#: keeps source compatibility with).
SDK2_VERSION = "0.3.6"
#: Where the oaas-sdk2-py virtual environment is created (``OAAS_BENCH_SDK2_VENV`` overrides).
DEFAULT_SDK2_VENV = Path(os.environ.get(
    "OAAS_BENCH_SDK2_VENV", Path.home() / ".cache" / "oaas-sdk-bench" / "sdk2-venv"))


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    """CPU model, logical and physical cores, memory (bytes), OS, Python, kernel."""
    cpu = platform.processor() or platform.machine()
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
            break
    os_name = platform.platform()
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip('"')
            break
    physical = None
    try:
        cores = {line.split(":")[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                 if line.startswith("core id")}
        physical = len(cores) or None
    except IndexError:
        pass
    hyper = "hypervisor" in _read("/proc/cpuinfo")
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "virtualized": hyper,
        "memory_bytes": mem,
        "os": os_name,
        "kernel": platform.release(),
        "architecture": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "load_average_1_5_15_min": load,
    }


def package_versions(names: tuple[str, ...] = ("oaas-sdk", "pydantic", "pydantic-core",
                                                "pydantic-settings", "msgpack", "lmdb",
                                                "matplotlib", "tqdm")) -> dict[str, str | None]:
    """Installed versions of the driver interpreter's packages (``None``: not installed)."""
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def git_revision(repo: Path) -> dict[str, Any]:
    """Commit, branch and whether the work tree has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref",
                                                                  "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": repr(e)}


@dataclass
class Sdk2Env:
    """The oaas-sdk2-py environment: ``python`` is its interpreter when ``ok``, else
    ``reason`` says why it could not be made."""

    ok: bool
    venv: str
    python: str | None = None
    reason: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    created: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "venv": self.venv, "python": self.python,
                "reason": self.reason, "packages": self.packages, "created": self.created}


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _installed(py: Path) -> dict[str, str]:
    code = ("import json, importlib.metadata as m; print(json.dumps({d.metadata['Name']: "
            "d.version for d in m.distributions()}))")
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return {}
    import json

    return dict(sorted(json.loads(r.stdout).items(), key=lambda kv: kv[0].lower()))


def ensure_sdk2_venv(venv: Path = DEFAULT_SDK2_VENV, version: str = SDK2_VERSION,
                     timeout_s: float = 600) -> Sdk2Env:
    """Create (or reuse) a virtual environment with ``oaas-sdk2-py==version`` installed.

    Reuses ``venv`` when it already has that version. Never raises: failures (no network,
    no ``venv`` module, pip errors) come back as ``ok=False`` with the reason.
    """
    py = _venv_python(venv)
    env = Sdk2Env(ok=False, venv=str(venv))
    try:
        pkgs = _installed(py) if py.exists() else {}
        if pkgs.get("oaas-sdk2-py") != version and pkgs.get("oaas_sdk2_py") != version:
            venv.parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)],
                               capture_output=True, text=True, timeout=timeout_s)
            if r.returncode != 0:
                env.reason = f"python -m venv failed: {r.stderr.strip()[-2000:]}"
                return env
            r = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check",
                                "-q", f"oaas-sdk2-py=={version}"],
                               capture_output=True, text=True, timeout=timeout_s)
            if r.returncode != 0:
                env.reason = (f"pip install oaas-sdk2-py=={version} failed: "
                              f"{(r.stderr or r.stdout).strip()[-2000:]}")
                return env
            env.created = True
            pkgs = _installed(py)
        env.ok = True
        env.python = str(py)
        env.packages = pkgs
    except (OSError, subprocess.SubprocessError) as e:
        env.reason = f"{type(e).__name__}: {e}"
    return env
