"""The ``oaas`` facade: class registration, decorators, configuration, commits, server and
agent management, statistics. One instance per process, :data:`oaas`."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from . import runtime as _rt
from .config import OaasConfig
from .errors import OaasError
from .model import methods as _m
from .model.object import OaasObject, _Resolved
from .model.registry import _CLASSES, class_by_id, registered_classes

if TYPE_CHECKING:
    from .rpc.server import ServerHandle

__all__ = ["OaasService", "oaas", "ServerError", "AgentError"]

log = logging.getLogger("oaas_sdk")
C = TypeVar("C", bound=type[OaasObject])


class ServerError(OaasError):
    """The (in-process) server could not be started or stopped."""


class AgentError(OaasError):
    """An agent could not be started or stopped."""


class OaasService:
    """The process-wide facade. Use the singleton :data:`oaas`."""

    def __init__(self) -> None:
        self._server_running = False
        self._server_port: int | None = None
        self._server: ServerHandle | None = None
        self._server_impl: str | None = None
        self._agents: dict[str, dict[str, Any]] = {}
        # The decorators, as instance attributes: type checkers then keep their overloads
        # (a staticmethod of an overloaded function loses them).
        self.method = _m.method
        self.function = _m.function
        self.constructor = _m.constructor
        self.getter = _m.getter
        self.setter = _m.setter

    # -- configuration --------------------------------------------------------------------
    def configure(self, config: OaasConfig | None = None) -> None:
        """Activate ``config`` (default: ``OaasConfig()`` from the environment).

        Pending writes of the previous configuration are flushed first; live objects of it
        are detached (load them again). Raises :class:`ConfigError` for an invalid setting
        (e.g. ``native="on"`` without the extension), :class:`StorageError` when the store
        cannot be opened (opened lazily on first use otherwise).
        """
        rt = _rt.configure(config)
        if not (config or rt.config).mock_mode:
            rt.engine  # noqa: B018 - open the store now so a bad path fails here

    @property
    def config(self) -> OaasConfig:
        """The active configuration."""
        return _rt.current().config

    # -- declarations ---------------------------------------------------------------------
    def service(self, name: str, package: str = "default",
                update_callback: Callable[..., Any] | None = None) -> Callable[[C], C]:
        """Register an :class:`OaasObject` subclass as the OaaS class ``"<package>.<name>"``.

        Raises ``TypeError`` when the class is not an ``OaasObject`` subclass and
        ``ValueError`` for a malformed name.
        """
        def deco(cls: C) -> C:
            if not (isinstance(cls, type) and issubclass(cls, OaasObject)):
                raise TypeError(f"@oaas.service({name!r}) decorates OaasObject subclasses, "
                                f"not {cls!r}")
            cls_id = f"{package}.{name}"
            from .stores import check_identity

            check_identity(cls_id, 0, 0)
            _CLASSES.pop(cls._oaas_cls_id, None) if _CLASSES.get(cls._oaas_cls_id) is cls \
                else None
            cls._oaas_cls_id = cls_id
            cls._oaas_package = package
            cls._oaas_service_name = name
            _CLASSES[cls_id] = cls
            return cls
        return deco

    def package(self, name: str, dependencies: list[str] | None = None) -> Callable[[C], C]:
        """Record package metadata on a class (oaas-sdk2-py compatibility)."""
        def deco(cls: C) -> C:
            cls._oaas_pkg_name = name  # type: ignore[attr-defined]
            cls._oaas_pkg_dependencies = list(dependencies or [])  # type: ignore[attr-defined]
            return cls
        return deco

    def get_service(self, name: str, package: str = "default") -> type[OaasObject] | None:
        """The class registered as ``"<package>.<name>"``, or ``None``."""
        return class_by_id(f"{package}.{name}")

    def list_services(self) -> dict[str, type[OaasObject]]:
        """All registered classes by ``cls_id``."""
        return registered_classes()

    # -- commits --------------------------------------------------------------------------
    def commit_all(self) -> None:
        """Commit every object with uncommitted changes (blocking). Cost grows with the
        number of changed objects, not live ones. Raises the first commit error after
        trying every object."""
        first: BaseException | None = None
        objs = self._candidates()
        try:
            for obj in objs:
                try:
                    obj.commit()
                except BaseException as e:
                    first = first or e
        finally:
            _keep_unsettled(objs)
        if first is not None:
            raise first

    async def commit_all_async(self) -> None:
        """Commit every object with uncommitted changes; resolves when all resolved
        (their writes share group-commit batches). Raises the first error."""
        objs = self._candidates()
        try:
            aws = [o.commit_async() for o in objs]
        finally:
            _keep_unsettled(objs)
        # Commits resolved already (acknowledged at submit, nothing to write, refused) are
        # read; the others (futures) are awaited in turn rather than gathered: they are
        # resolved by the same batches, so after the first suspension most are done, and
        # awaiting a done future costs no done-callback, task or loop iteration.
        first: BaseException | None = None
        for i, a in enumerate(aws):
            if isinstance(a, _Resolved):
                r = a.error
            else:
                try:
                    await a
                    continue
                except asyncio.CancelledError as e:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # This call was cancelled, not the commit's future: as gather
                        # would, cancel the futures not awaited yet (their commits
                        # stand).
                        for b in aws[i + 1:]:
                            if not isinstance(b, _Resolved):
                                b.cancel()  # type: ignore[attr-defined]
                        raise
                    r = e
                except BaseException as e:  # noqa: BLE001 - reported after the others
                    r = e
            if r is not None and first is None:
                first = r
        if first is not None:
            raise first

    def _candidates(self) -> list[OaasObject]:
        """Objects that may have changed. The registries are swapped for new ones rather
        than iterated in place: a dict keeps its largest table after deletions, so
        iterating one that once held every live object would cost O(live objects).
        The caller commits each and then runs :func:`_keep_unsettled` on them (an object
        whose commit failed, or was never made, stays a candidate)."""
        import weakref

        rt = _rt.current()
        dirty, touched = rt.dirty, rt.touched
        rt.dirty = {}
        rt.touched = weakref.WeakValueDictionary()
        objs = list(dirty.values())
        if touched:
            seen = {id(o) for o in objs}
            # The WeakValueDictionary's own dict of weak references, read in C (its
            # items() is a Python generator); a dead reference gives None.
            for r in list(touched.data.values()):  # type: ignore[attr-defined]
                o = r()
                if o is not None and id(o) not in seen:
                    objs.append(o)
        return objs

    def flush(self) -> None:
        """Block until every queued write is in the store (matters with durability="async")."""
        _rt.current().flush()

    def shutdown(self) -> None:
        """Flush pending writes and close the store; the next use reopens it."""
        _rt.shutdown()

    # -- observability --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict: ``implementation`` ("native"/"python"), ``cache_hits``,
        ``cache_misses``, ``cache_evictions``, ``cache_bytes``, ``commits``,
        ``failed_commits``, ``entries_written``, ``bytes_written``, ``batches``,
        ``mean_batch_size``, ``persist_latency_p50_us``, ``persist_latency_p99_us``,
        ``queue_depth``, ``pending_bytes`` (entry bytes queued, not yet written),
        ``write_throttles`` (commits that waited for ``pending_max_bytes``),
        ``live_objects``, ``dirty_objects``, ``store``, ``durability``."""
        return _rt.current().stats()

    # -- server and agents (the OaaS gRPC protocol, oaas_sdk.rpc) -------------------------
    def start_server(self, port: int | None = None, loop: Any = None,
                     async_mode: bool | None = None) -> None:
        """Serve the registered classes over the OaaS invocation protocol (gRPC service
        ``oprc.OprcFunction``) on
        ``OaasConfig.server_host``:``port``.

        ``port``: default ``OaasConfig.http_port`` (``HTTP_PORT``, 8080); 0 picks a free
        port (see :meth:`get_server_info`). ``loop``: run the server on this event loop
        (it starts when the loop runs); by default on the running loop when called from a
        coroutine, else on a background thread with its own loop. ``async_mode`` is
        accepted for oaas-sdk2-py compatibility. The server is the native (tonic) one when
        the native implementation is selected (``OaasConfig.native``), else grpcio's
        (``get_server_info()["implementation"]``). Raises :class:`ServerError` when a server
        is already running or the address cannot be bound, :class:`ConfigError` when the
        TLS settings (``server_tls_cert``, ``server_tls_key``, ``server_tls_client_ca``)
        are incomplete or their files unreadable or not a certificate and its key.
        """
        if self._server is not None:
            raise ServerError("the server is already running")
        from .rpc.native_server import server_implementation
        from .rpc.server import ServerHandle
        from .rpc.tls import server_tls

        cfg = self.config
        port = cfg.http_port if port is None else port
        impl = server_implementation(cfg)
        tls = server_tls(cfg)  # ConfigError naming the field
        try:
            self._server = ServerHandle.start(cfg.server_host, port, cfg.rpc_max_message_bytes,
                                              loop, impl, tls)
        except OSError as e:
            raise ServerError(f"cannot start the server on {cfg.server_host}:{port}: {e}") \
                from None
        self._server_running = True
        self._server_port = self._server.port
        self._server_impl = impl
        log.info("serving %d classes over oprc.OprcFunction on %s:%d", len(_CLASSES),
                 cfg.server_host, self._server_port)

    def stop_server(self, grace: float | None = None) -> asyncio.Task[None] | None:
        """Stop the server (no-op when not running). Calls in flight get ``grace`` seconds
        to finish (default ``OaasConfig.shutdown_grace_s``). Blocks until stopped, except
        when called from a coroutine on the server's own event loop: the stop is then
        scheduled and its task returned (``await oaas.stop_server()`` waits for it)."""
        handle, self._server = self._server, None
        self._server_running = False
        self._server_port = None
        if handle is None:
            return None
        return handle.stop(self.config.shutdown_grace_s if grace is None else grace)

    def restart_server(self, port: int | None = None, loop: Any = None,
                       async_mode: bool | None = None) -> None:
        """Stop the server if it runs, then start it again on ``port`` (default: the port
        it had, else ``OaasConfig.http_port``). Raises :class:`ServerError` as
        :meth:`start_server`."""
        previous = self._server_port
        if self._server is not None:
            self.stop_server()
        self.start_server(port if port is not None else previous, loop, async_mode)

    def is_server_running(self) -> bool:
        """Whether :meth:`start_server` started a server that is not stopped."""
        return self._server_running

    def get_server_info(self) -> dict[str, Any]:
        """Server status: ``running``, ``port`` (bound port or ``None``), ``host``,
        ``async_mode``, ``mock_mode``, ``registered_services`` (and ``services``, the same
        count), ``inflight`` (calls being served), ``implementation`` (``"native"``: the
        tonic server, ``"python"``: grpcio; ``None`` when not running), ``tls`` (whether
        it serves TLS), ``io_threads`` (the native server's I/O threads,
        ``OAAS_RPC_THREADS``; ``None`` otherwise)."""
        cfg = self.config
        h = self._server
        return {"running": self._server_running, "port": self._server_port,
                "host": cfg.server_host if h is not None else None,
                "async_mode": cfg.async_mode, "mock_mode": cfg.mock_mode,
                "registered_services": len(_CLASSES), "services": len(_CLASSES),
                "inflight": h.server.inflight if h is not None else 0,
                "implementation": self._server_impl if h is not None else None,
                "tls": h is not None and h.server.tls is not None,
                "io_threads": getattr(h.server, "io_threads", None) if h is not None
                else None}

    async def start_agent(self, service_class: type[OaasObject], obj_id: int | str | None = None,
                          partition_id: int | None = None, loop: Any = None) -> str:
        """Start an agent for one object (default id 1); returns its id
        ``"<package>.<Name>:<obj_id>"``. Raises :class:`AgentError` for an unregistered class
        or an agent already running."""
        if not (isinstance(service_class, type) and issubclass(service_class, OaasObject)) \
                or class_by_id(service_class._oaas_cls_id) is not service_class:
            raise AgentError(f"{service_class!r} is not registered with @oaas.service")
        obj_id = 1 if obj_id is None else obj_id
        agent_id = f"{service_class._oaas_cls_id}:{obj_id}"
        if agent_id in self._agents:
            raise AgentError(f"agent {agent_id} is already running")
        pid = self.config.oprc_partition_default if partition_id is None else partition_id
        self._agents[agent_id] = {"service_class": service_class, "obj_id": obj_id,
                                  "partition_id": pid, "started_at": datetime.now()}
        return agent_id

    async def stop_agent(self, agent_id: str | None = None,
                         service_class: type[OaasObject] | None = None,
                         obj_id: int | str | None = None) -> None:
        """Stop an agent by id, or by class and object id. Raises :class:`AgentError`."""
        if agent_id is None:
            if service_class is None:
                raise AgentError("give agent_id or service_class")
            agent_id = f"{service_class._oaas_cls_id}:{1 if obj_id is None else obj_id}"
        if self._agents.pop(agent_id, None) is None:
            raise AgentError(f"agent {agent_id} is not running")

    def list_agents(self) -> dict[str, dict[str, Any]]:
        """Running agents by id, with class, object, partition and start time."""
        now = datetime.now()
        return {aid: {"service_name": i["service_class"]._oaas_service_name,
                      "package": i["service_class"]._oaas_package, "obj_id": i["obj_id"],
                      "partition_id": i["partition_id"],
                      "started_at": i["started_at"].isoformat(),
                      "running_duration": str(now - i["started_at"])}
                for aid, i in self._agents.items()}

    async def stop_all_agents(self) -> None:
        """Stop every running agent."""
        self._agents.clear()

    def package_spec(self) -> dict[str, Any]:
        """The package description of the registered classes (classes, methods, fields)."""
        classes = []
        for cls_id, cls in sorted(_CLASSES.items()):
            classes.append({
                "key": cls._oaas_service_name, "package": cls._oaas_package, "cls_id": cls_id,
                "fields": {n: repr(f.annotation) for n, f in cls._oaas_fields.items()},
                "functions": [{"name": s.name, "kind": s.kind, "stateless": s.stateless,
                               "serve_with_agent": s.serve_with_agent}
                              for s in cls._oaas_methods.values()],
            })
        return {"classes": classes}

    def print_pkg(self) -> str:
        """The package description as JSON text (also printed)."""
        text = json.dumps(self.package_spec(), indent=2)
        print(text)
        return text

    def run_or_gen(self) -> None:
        """Entry point of a service module.

        ``python service.py``: serve the registered classes (port ``HTTP_PORT``, see
        :meth:`start_server`; a line on standard error says when it serves) until SIGTERM
        or SIGINT, then stop gracefully: no new calls,
        calls in flight finish (``OaasConfig.shutdown_grace_s`` at most), pending commits
        are flushed, and the function returns (the process exits 0).

        ``python service.py gen [--out FILE] [--stdout] [--format yaml|json]``: write the
        package description the platform deploys from (``OPackage`` documents, see
        :mod:`oaas_sdk.rpc.package`) to ``FILE`` or standard output (both with
        ``--stdout``); YAML by default. Raises ``SystemExit`` (status 2) for bad
        arguments, :class:`ServerError` when the server cannot start.
        """
        if len(sys.argv) > 1 and sys.argv[1] == "gen":
            self._gen(sys.argv[2:])
            return
        try:
            asyncio.run(self._serve_until_signal())
        except KeyboardInterrupt:  # no signal handlers on this platform
            pass
        finally:
            self.stop_server(grace=0)
            self.shutdown()

    async def _serve_until_signal(self) -> None:
        import signal

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / Windows
                pass
        self.start_server()
        handle = self._server
        assert handle is not None
        if isinstance(handle.started, asyncio.Task):
            await handle.started
        n = len(_CLASSES)
        print(f"oaas-sdk: serving {n} class{'' if n == 1 else 'es'} (oprc.OprcFunction) "
              f"on {self.config.server_host}:{handle.port} ({self._server_impl} server)",
              file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping: finishing calls in flight, flushing commits")
        self._server, self._server_running, self._server_port = None, False, None
        await handle.astop(self.config.shutdown_grace_s)
        await self.commit_all_async()

    def _gen(self, argv: list[str]) -> None:
        import argparse

        ap = argparse.ArgumentParser(prog=f"{sys.argv[0]} gen",
                                     description="Write the package description.")
        ap.add_argument("--out", "-o", help="write to this file")
        ap.add_argument("--stdout", action="store_true", help="also print it")
        ap.add_argument("--format", "-f", choices=("yaml", "json"), default="yaml")
        ns = ap.parse_args(argv)
        from .rpc.package import export_packages, render

        text = render(export_packages(registered_classes()), ns.format)
        if ns.out:
            with open(ns.out, "w", encoding="utf-8") as f:
                f.write(text)
        if ns.stdout or not ns.out:
            sys.stdout.write(text)
            sys.stdout.flush()


#: The process-wide facade.
oaas = OaasService()


def _keep_unsettled(objs: list[OaasObject]) -> None:
    """Put back into the registries the candidates of ``commit_all`` that their commit
    did not settle (refused, or never made when interrupted): changed fields into
    ``Runtime.dirty``, read mutable fields into ``Runtime.touched``. A commit that fails
    after it was applied puts its object back itself (``_oaas_undo_entries``). Registering
    only these, after the commits, spares a weak reference per committed object."""
    rt = _rt.current()
    for o in objs:
        st = o._oaas_state
        if st.dirty or st.version == 0:
            rt.dirty[id(o)] = o
        elif st.live:
            rt.touched[id(o)] = o
