"""``python -m oaas_sdk`` (also the ``oaas-sdk`` command): inspect a store without writing.

Commands (``STORAGE`` is a storage string as in ``OaasConfig.storage``)::

    classes STORAGE                          class ids with stored objects, and how many
    objects STORAGE CLS_ID [--limit N]       object ids of a class, with version and time
    get STORAGE CLS_ID OBJ_ID [--json]       decoded fields and version of one object
    stats STORAGE                            objects, entries and bytes per class
    verify STORAGE                           decode every entry; list corrupt ones

``--app MODULE`` imports the module that defines the classes, so fields decode with their
type hints; without it fields decode schema-less into plain JSON-able values
(``oaas_sdk.codec.decode_plain``). Exit status: 0 done; 1 an unknown class or object, or
corrupt entries (``verify``, ``get``); 2 a bad command line, storage string or store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .._backend import select_codec
from ..errors import ConfigError, OaasError, StorageError
from ..stores import check_identity
from .inspector import Corrupt, DecodedObject, Inspector, iso_ms, parse_object_id

__all__ = ["main", "build_parser"]

PROG = "oaas-sdk"


class _Fail(Exception):
    """An error for the user: message on stderr, this exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (``prog`` is ``oaas-sdk``)."""
    p = argparse.ArgumentParser(
        prog=PROG, description="Inspect an oaas-sdk store (read-only: nothing is written).",
        epilog="STORAGE is a storage string as in OaasConfig.storage, e.g. lmdb:./.oaas")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("storage", metavar="STORAGE", help="e.g. lmdb:./.oaas")
        c.add_argument("--app", metavar="MODULE",
                       help="import MODULE first: its classes decode fields with their hints")
        return c

    command("classes", "list the class ids that have stored objects")
    c = command("objects", "list the objects of a class")
    c.add_argument("cls_id", metavar="CLS_ID")
    c.add_argument("--limit", type=_limit, default=100, metavar="N",
                   help="show at most N objects (default 100; 0: all)")
    c = command("get", "show one object's decoded fields and version")
    c.add_argument("cls_id", metavar="CLS_ID")
    c.add_argument("obj_id", metavar="OBJ_ID", help="digits: a numeric id; else a string id")
    c.add_argument("--partition", type=int, default=0, metavar="P",
                   help="partition id (default 0)")
    c.add_argument("--json", action="store_true", help="print one JSON document")
    command("stats", "count objects, entries and bytes per class")
    command("verify", "decode every entry and list the corrupt ones (exit 1 if any)")
    return p


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 (all) or more")
    return n


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Run the inspector with ``argv`` (default ``sys.argv[1:]``); returns the exit status
    (0, 1 or 2, see the module docstring). ``out``/``err`` default to stdout/stderr."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)  # exits with 2 on a bad command line
    try:
        _use_configured_codec()
        try:
            insp = Inspector(args.storage, app=args.app)
        except (ConfigError, StorageError) as e:
            raise _Fail(str(e), 2) from None
        try:
            return int(_COMMANDS[args.command](insp, args, out, err))
        finally:
            insp.close()
    except _Fail as e:
        print(f"{PROG}: error: {e}", file=err)
        return e.status
    except OaasError as e:
        print(f"{PROG}: error: {e}", file=err)
        return 1
    except BrokenPipeError:  # `... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _use_configured_codec() -> None:
    """Decode with the implementation ``OAAS_NATIVE`` asks for (native when available)."""
    choice = os.environ.get("OAAS_NATIVE", "auto").lower()
    if choice not in ("auto", "on", "off"):
        raise _Fail(f"OAAS_NATIVE={choice!r}: expected auto, on or off", 2)
    try:
        select_codec(choice)
    except ConfigError as e:
        raise _Fail(str(e), 2) from None


def _need_class(insp: Inspector, cls_id: str) -> None:
    known = insp.classes()
    if cls_id not in known:
        have = ", ".join(known) if known else "none"
        raise _Fail(f"no objects of class {cls_id!r} in the {insp.name} "
                    f"(classes with objects: {have})", 1)


def _cmd_classes(insp: Inspector, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rows = [(c, len(insp.keys(c))) for c in insp.classes()]
    width = max((len(c) for c, _ in rows), default=0)
    for c, n in rows:
        print(f"{c:<{width}}  {n} object{'s' if n != 1 else ''}", file=out)
    if not rows:
        print(f"(no objects in the {insp.name})", file=err)
    return 0


def _cmd_objects(insp: Inspector, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _need_class(insp, args.cls_id)
    keys = insp.keys(args.cls_id)
    shown = keys if args.limit == 0 else keys[:args.limit]
    rows = []
    for key in shown:
        stored = insp.read(key)
        if stored is None:
            continue  # deleted meanwhile
        _, pid, oid = key
        rows.append((str(oid), pid, stored.version, iso_ms(stored.updated_ms),
                     len(stored.entries)))
    width = max((len(r[0]) for r in rows), default=0)
    for oid, pid, version, updated, n in rows:
        part = f"  partition {pid}" if pid else ""
        print(f"{oid:<{width}}  version {version}  updated {updated}  "
              f"{n} field{'s' if n != 1 else ''}{part}", file=out)
    if len(shown) < len(keys):
        print(f"({len(shown)} of {len(keys)} objects shown; --limit 0 shows all)", file=err)
    return 0


def _cmd_get(insp: Inspector, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    oid = parse_object_id(args.obj_id)
    key = (args.cls_id, args.partition, oid)
    try:
        check_identity(*key)
    except ValueError as e:
        raise _Fail(str(e), 2) from None
    stored = insp.read(key)
    if stored is None:
        _need_class(insp, args.cls_id)
        raise _Fail(f"no object {args.cls_id}/{args.partition}/{oid} in the {insp.name}", 1)
    obj = insp.decode(key, stored)
    if args.json:
        print(json.dumps(obj.to_json(), indent=2, ensure_ascii=False), file=out)
    else:
        _print_object(obj, out)
    for c in obj.corrupt:
        print(f"{PROG}: corrupt entry: {c}", file=err)
    return 1 if obj.corrupt else 0


def _print_object(obj: DecodedObject, out: TextIO) -> None:
    cls_id, pid, oid = obj.key
    print(f"{cls_id}/{pid}/{oid}  version {obj.version}", file=out)
    print(f"  created {iso_ms(obj.created_ms)}  updated {iso_ms(obj.updated_ms)}", file=out)
    width = max((len(n) for n in obj.fields), default=0)
    for name, value in obj.fields.items():
        print(f"  {name:<{width}} = {json.dumps(value, ensure_ascii=False)}", file=out)


def _cmd_stats(insp: Inspector, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    per: dict[str, list[int]] = {}
    for cls_id in insp.classes():
        row = per.setdefault(cls_id, [0, 0, 0, 0])  # objects, entries, bytes, max version
        for key in insp.keys(cls_id):
            stored = insp.read(key)
            if stored is None:
                continue
            row[0] += 1
            row[1] += len(stored.entries)
            row[2] += sum(map(len, stored.entries.values()))
            row[3] = max(row[3], stored.version)
    totals = [sum(r[i] for r in per.values()) for i in range(3)]
    print(f"store:   {insp.name}", file=out)
    print(f"classes: {len(per)}  objects: {totals[0]}  entries: {totals[1]}  "
          f"entry bytes: {totals[2]}", file=out)
    extra = _store_extra(insp)
    if extra:
        print("  ".join(f"{k}: {v}" for k, v in extra.items()), file=out)
    if per:
        width = max(len(c) for c in per)
        print(f"{'class':<{width}}  {'objects':>8}  {'entries':>8}  {'bytes':>10}  "
              f"{'max version':>11}", file=out)
        for cls_id, (n, e, b, v) in per.items():
            print(f"{cls_id:<{width}}  {n:>8}  {e:>8}  {b:>10}  {v:>11}", file=out)
    return 0


def _store_extra(insp: Inspector) -> dict[str, Any]:
    """Store-specific figures: for LMDB the map size and the data file's size."""
    extra: dict[str, Any] = {}
    map_size = getattr(insp.store, "map_size", None)
    if callable(map_size):
        extra["map size"] = map_size()
    path = getattr(insp.store, "path", None)
    if isinstance(path, str):
        data = os.path.join(path, "data.mdb")
        if os.path.isfile(data):
            extra["file size"] = os.path.getsize(data)
    return extra


def _cmd_verify(insp: Inspector, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    objects = entries = 0
    corrupt: list[Corrupt] = []
    for _, found in insp.walk():
        if isinstance(found, Corrupt):
            corrupt.append(found)
            continue
        objects += 1
        entries += len(found.fields)
        corrupt.extend(found.corrupt)
    for c in corrupt:
        print(f"corrupt: {c}", file=out)
    print(f"verified {objects} objects, {entries} entries in the {insp.name}: "
          f"{len(corrupt)} corrupt", file=out)
    return 1 if corrupt else 0


_COMMANDS = {
    "classes": _cmd_classes,
    "objects": _cmd_objects,
    "get": _cmd_get,
    "stats": _cmd_stats,
    "verify": _cmd_verify,
}
