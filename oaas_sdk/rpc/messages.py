"""Protobuf messages of the OaaS invocation protocol (package ``oprc``), built in code.

The descriptor is the one of ``oprc.proto`` (next to this module), assembled as a
``FileDescriptorProto`` and turned into message classes with protobuf's message factory,
in a private descriptor pool: no generated code, so no coupling between a protoc version
and the installed protobuf runtime, and no clash with an application that registers its
own ``oprc`` files in the default pool.

Exports the message classes :data:`PbInvocationRequest`, :data:`PbObjectInvocationRequest`,
:data:`PbInvocationResponse`, the service name and method paths, and converters between
these messages and the pydantic types of :mod:`oaas_sdk.invocation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ..invocation import (
    InvocationRequest,
    InvocationResponse,
    ObjectInvocationRequest,
    ResponseStatus,
)

__all__ = [
    "PROTO_FILE",
    "SERVICE",
    "INVOKE_FN",
    "INVOKE_OBJ",
    "PbInvocationRequest",
    "PbObjectInvocationRequest",
    "PbInvocationResponse",
    "file_descriptor_proto",
    "HEALTH_SERVICE",
    "PbHealthCheckRequest",
    "PbHealthCheckResponse",
    "request_from_pb",
    "object_request_from_pb",
    "response_to_pb",
    "response_from_pb",
]

PROTO_FILE = Path(__file__).with_name("oprc.proto")
"""The ``.proto`` text of the protocol, for clients built with protoc/grpc_tools."""

SERVICE = "oprc.OprcFunction"
INVOKE_FN = f"/{SERVICE}/InvokeFn"
INVOKE_OBJ = f"/{SERVICE}/InvokeObj"

_F = descriptor_pb2.FieldDescriptorProto


def _field(msg: Any, name: str, number: int, ftype: int, *, label: int = _F.LABEL_OPTIONAL,
           type_name: str = "") -> Any:
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    return f


def _map_field(msg: Any, name: str, number: int) -> None:
    entry = msg.nested_type.add(name="".join(p.capitalize() for p in name.split("_")) + "Entry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_STRING)
    _field(msg, name, number, _F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
           type_name=f".oprc.{msg.name}.{entry.name}")


def _optional(msg: Any, name: str, number: int, ftype: int) -> None:
    """A proto3 ``optional`` field: a synthetic one-field oneof named ``_<name>``."""
    f = _field(msg, name, number, ftype)
    f.proto3_optional = True
    f.oneof_index = len(msg.oneof_decl)
    msg.oneof_decl.add(name=f"_{name}")


def file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """The ``FileDescriptorProto`` of ``oprc.proto`` (a fresh copy)."""
    fd = descriptor_pb2.FileDescriptorProto(name="oprc.proto", package="oprc", syntax="proto3")

    req = fd.message_type.add(name="InvocationRequest")
    _field(req, "partition_id", 1, _F.TYPE_UINT32)
    _field(req, "cls_id", 3, _F.TYPE_STRING)
    _field(req, "fn_id", 4, _F.TYPE_STRING)
    _map_field(req, "options", 5)
    _field(req, "payload", 6, _F.TYPE_BYTES)

    oreq = fd.message_type.add(name="ObjectInvocationRequest")
    _field(oreq, "partition_id", 1, _F.TYPE_UINT32)
    _field(oreq, "legacy_object_id", 2, _F.TYPE_UINT64)
    _field(oreq, "cls_id", 3, _F.TYPE_STRING)
    _field(oreq, "fn_id", 4, _F.TYPE_STRING)
    _map_field(oreq, "options", 5)
    _field(oreq, "payload", 6, _F.TYPE_BYTES)
    _optional(oreq, "object_id", 7, _F.TYPE_STRING)

    status = fd.enum_type.add(name="ResponseStatus")
    for s in ResponseStatus:
        status.value.add(name=s.name, number=int(s))

    resp = fd.message_type.add(name="InvocationResponse")
    _optional(resp, "payload", 1, _F.TYPE_BYTES)
    _field(resp, "status", 2, _F.TYPE_ENUM, type_name=".oprc.ResponseStatus")
    _map_field(resp, "headers", 3)
    _field(resp, "invocation_id", 4, _F.TYPE_STRING)

    svc = fd.service.add(name="OprcFunction")
    svc.method.add(name="InvokeFn", input_type=".oprc.InvocationRequest",
                   output_type=".oprc.InvocationResponse")
    svc.method.add(name="InvokeObj", input_type=".oprc.ObjectInvocationRequest",
                   output_type=".oprc.InvocationResponse")
    return fd


_pool = descriptor_pool.DescriptorPool()
_file = _pool.Add(file_descriptor_proto())
_fdesc = _pool.FindFileByName("oprc.proto")

PbInvocationRequest: Any = message_factory.GetMessageClass(
    _fdesc.message_types_by_name["InvocationRequest"])
PbObjectInvocationRequest: Any = message_factory.GetMessageClass(
    _fdesc.message_types_by_name["ObjectInvocationRequest"])
PbInvocationResponse: Any = message_factory.GetMessageClass(
    _fdesc.message_types_by_name["InvocationResponse"])

# The standard gRPC health service (grpc/health/v1/health.proto: Check only), so that
# orchestrators' gRPC probes (Kubernetes grpc probes, grpc_health_probe) can ask the
# runtime whether it serves.
HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_SERVING, HEALTH_NOT_SERVING = 1, 2


def _health_file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="grpc/health/v1/health.proto",
                                            package="grpc.health.v1", syntax="proto3")
    req = fd.message_type.add(name="HealthCheckRequest")
    _field(req, "service", 1, _F.TYPE_STRING)
    resp = fd.message_type.add(name="HealthCheckResponse")
    status = resp.enum_type.add(name="ServingStatus")
    for i, n in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=n, number=i)
    _field(resp, "status", 1, _F.TYPE_ENUM,
           type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus")
    return fd


_pool.Add(_health_file())
_hdesc = _pool.FindFileByName("grpc/health/v1/health.proto")
PbHealthCheckRequest: Any = message_factory.GetMessageClass(
    _hdesc.message_types_by_name["HealthCheckRequest"])
PbHealthCheckResponse: Any = message_factory.GetMessageClass(
    _hdesc.message_types_by_name["HealthCheckResponse"])


def request_from_pb(m: Any) -> InvocationRequest:
    """An :class:`InvocationRequest` from its protobuf message."""
    return InvocationRequest.model_construct(  # typed by protobuf: no validation needed
        partition_id=m.partition_id, cls_id=m.cls_id, fn_id=m.fn_id,
        options=dict(m.options), payload=m.payload)


def object_request_from_pb(m: Any) -> ObjectInvocationRequest:
    """An :class:`ObjectInvocationRequest` from its protobuf message. The object id is
    field 7; when it is absent, a non-zero field 2 (the numeric id of older platform
    versions) is taken as its decimal string; else ``object_id`` is ``None``."""
    if m.HasField("object_id"):
        oid: str | None = m.object_id
    elif m.legacy_object_id:
        oid = str(m.legacy_object_id)
    else:
        oid = None
    return ObjectInvocationRequest.model_construct(
        partition_id=m.partition_id, cls_id=m.cls_id, fn_id=m.fn_id,
        options=dict(m.options), payload=m.payload, object_id=oid)


def response_to_pb(r: InvocationResponse) -> Any:
    """The protobuf message of an :class:`InvocationResponse` (``payload=None``: unset)."""
    m = PbInvocationResponse(status=int(r.status), headers=r.headers,
                             invocation_id=r.invocation_id)
    if r.payload is not None:
        m.payload = r.payload
    return m


def response_from_pb(m: Any) -> InvocationResponse:
    """An :class:`InvocationResponse` from its protobuf message. An unknown status number
    is kept as ``SYSTEM_ERROR``."""
    try:
        status = ResponseStatus(m.status)
    except ValueError:
        status = ResponseStatus.SYSTEM_ERROR
    return InvocationResponse(payload=m.payload if m.HasField("payload") else None,
                              status=status, headers=dict(m.headers),
                              invocation_id=m.invocation_id)
