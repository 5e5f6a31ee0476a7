"""The write path: engines that batch commits and persist them (group commit).

- ``protocol``: what both engines share (tickets, the commit future, settling waiters).
- ``_fallback``: :class:`Engine`, the pure-Python engine over any store (memory, LMDB
  with ``native="off"``, Redis).
- ``_native``: :class:`NativeEngine`, the adapter of the native engine (LMDB).

The runtime gets its engine from the seam (``oaas_sdk._backend``); see docs/engine.md.
"""

from __future__ import annotations

from ._fallback import CommitTicket, Engine
from ._native import NativeEngine
from .protocol import CommitFuture, OnError, Ticket, thrown

__all__ = ["Engine", "CommitFuture", "CommitTicket", "NativeEngine", "Ticket", "AnyEngine",
           "OnError", "thrown"]

AnyEngine = Engine | NativeEngine
