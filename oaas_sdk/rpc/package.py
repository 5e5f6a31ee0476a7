"""The package description the OaaS platform deploys a class runtime from (``OPackage``),
as ``python service.py gen`` writes it.

One document per package: ``name``, ``version``, ``metadata`` (``tags``, ``author``,
``description``), ``classes`` (``key``, ``description``, ``function_bindings``),
``functions`` (``key`` = ``"<Class>.<fn>"``, ``function_type: CUSTOM``), ``dependencies``
and a ``deployments`` skeleton per class (``target_envs`` to fill in), the shape
oaas-sdk2-py 0.3.6 writes. Each binding also says whether the function is stateless
(``immutable``) and lists its parameters with their type names.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

__all__ = ["export_packages", "render"]


def _type_name(hint: Any) -> str:
    if hint is inspect.Parameter.empty:
        return "any"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _doc(obj: Any) -> str:
    return inspect.cleandoc(getattr(obj, "__doc__", None) or "")


def export_packages(classes: dict[str, type]) -> list[dict[str, Any]]:
    """The package documents of ``classes`` (``cls_id`` -> class), sorted by package and
    class name."""
    from .payload import signature_of

    pkgs: dict[str, dict[str, Any]] = {}
    for _cls_id, cls in sorted(classes.items()):
        pkg_name = getattr(cls, "_oaas_package", "default")
        name = getattr(cls, "_oaas_service_name", cls.__name__)
        pkg = pkgs.get(pkg_name)
        if pkg is None:
            pkg = pkgs[pkg_name] = {"name": pkg_name, "version": "1.0",
                                    "metadata": {"tags": []}, "classes": [],
                                    "functions": [], "dependencies": [], "deployments": []}
        meta = getattr(cls, "_oaas_package_meta", None) or {}
        if meta.get("version"):
            pkg["version"] = str(meta["version"])
        md = meta.get("metadata", meta)
        for k in ("author", "description"):
            if md.get(k):
                pkg["metadata"][k] = md[k]
        for t in md.get("tags") or []:
            if t not in pkg["metadata"]["tags"]:
                pkg["metadata"]["tags"].append(t)
        deps = list(meta.get("dependencies") or getattr(cls, "_oaas_pkg_dependencies", []))
        for d in deps:
            if d not in pkg["dependencies"]:
                pkg["dependencies"].append(d)
        bindings = []
        for fn_name, spec in getattr(cls, "_oaas_methods", {}).items():
            sig = signature_of(spec)
            bindings.append({
                "name": fn_name,
                "function_key": f"{name}.{fn_name}",
                "access_modifier": "PUBLIC",
                "immutable": bool(spec.stateless or spec.kind in ("getter", "function")),
                "parameters": [f"{p.name}: {_type_name(sig.hints.get(p.name, p.annotation))}"
                               for p in sig.params],
            })
            pkg["functions"].append({"key": f"{name}.{fn_name}", "function_type": "CUSTOM",
                                     "description": _doc(spec.fn), "config": {}})
        pkg["classes"].append({"key": name, "description": _doc(cls),
                               "function_bindings": bindings})
        pkg["deployments"].append({"key": name, "package_name": pkg_name,
                                   "class_key": name, "target_envs": [], "odgm": {}})
    return [pkgs[k] for k in sorted(pkgs)]


def render(packages: list[dict[str, Any]], fmt: str = "yaml") -> str:
    """``packages`` as text: YAML documents separated by ``---``, or JSON (the package
    object when there is one, else an array of them). Raises ``ValueError`` for another
    ``fmt``."""
    if fmt == "json":
        doc: Any = packages[0] if len(packages) == 1 else packages
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "yaml":
        import yaml

        return "---\n".join(yaml.safe_dump(p, sort_keys=False, allow_unicode=True)
                            for p in packages)
    raise ValueError(f"unknown format {fmt!r} (yaml or json)")
