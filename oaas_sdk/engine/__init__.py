"""The write path: engines that batch commits and persist them (group commit).

- ``protocol``: what both engines share (tickets, the commit future, settling waiters).
- ``_fallback``: :class:`PythonEngine`, the pure-Python engine over any store (memory, LMDB
  with ``native="off"``, Redis).
- ``_native``: :class:`NativeEngine`, the adapter of the native engine (LMDB, Redis or
  memory).

The runtime gets its engine from the seam (``oaas_sdk._backend``); see docs/engine.md.
"""

from __future__ import annotations

from ._fallback import CommitTicket, PythonEngine
from ._native import NativeEngine
from .protocol import CommitFuture, OnError, Ticket, thrown

__all__ = ["Engine", "PythonEngine", "NativeEngine", "CommitFuture", "CommitTicket", "Ticket",
           "OnError", "thrown"]

#: The engine a runtime holds: the pure-Python :class:`PythonEngine` or the adapter of the
#: native one, :class:`NativeEngine` (same interface). One name per layer: ``Engine`` here,
#: ``PyEngine`` in the bindings crate (``oaas_sdk._native.Engine``), ``batcher::Engine`` in
#: the core crate.
Engine = PythonEngine | NativeEngine
