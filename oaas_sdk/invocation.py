"""Invocation request and response types of the OaaS protocol (``oprc`` package).

A method parameter annotated :class:`ObjectInvocationRequest` (or :class:`InvocationRequest`
for class-level functions) is not a user argument: it receives the request of the current
invocation. A local call gets a request built from the call. Field numbers on the wire are
listed in the OaaS protocol notes; ``payload`` is the raw request body.
"""

from __future__ import annotations

from enum import IntEnum

from pydantic import BaseModel, Field

__all__ = ["InvocationRequest", "ObjectInvocationRequest", "InvocationResponse",
           "ResponseStatus"]


class ResponseStatus(IntEnum):
    """Status of an :class:`InvocationResponse` (protobuf enum ``oprc.ResponseStatus``)."""

    OKAY = 0
    INVALID_REQUEST = 1
    APP_ERROR = 2
    SYSTEM_ERROR = 3


class InvocationRequest(BaseModel):
    """Invocation of a class-level function: partition, class, function, options, payload."""

    partition_id: int = 0
    cls_id: str = ""
    fn_id: str = ""
    options: dict[str, str] = Field(default_factory=dict)
    payload: bytes = b""


class ObjectInvocationRequest(InvocationRequest):
    """Invocation of a method on one object: an :class:`InvocationRequest` plus the object id
    (a decimal string for numeric ids, as on the wire)."""

    object_id: str | None = None


class InvocationResponse(BaseModel):
    """Result of an invocation: payload bytes (``None``: no result), status, headers."""

    payload: bytes | None = None
    status: ResponseStatus = ResponseStatus.OKAY
    headers: dict[str, str] = Field(default_factory=dict)
    invocation_id: str = ""
