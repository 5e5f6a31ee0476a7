"""Remote invocation over the OaaS gRPC protocol (service ``oprc.OprcFunction``).

* :mod:`.messages`: the protobuf messages, built in code from ``oprc.proto``.
* :mod:`.payload`: arguments and results <-> payload bytes (the platform's conventions and
  oaas-sdk's announced extensions).
* :mod:`.server`: :func:`~.server.dispatch` (one request through the local method path) and
  the ``grpc.aio`` server behind ``oaas.start_server()`` / ``oaas.run_or_gen()``.
* :mod:`.client`: calls on objects served by other processes (``ObjectRef`` with a route).
* :mod:`.package`: the package description ``python service.py gen`` writes.

Nothing here is imported by ``import oaas_sdk``: grpcio loads on first use. See
``docs/rpc.md``.
"""
