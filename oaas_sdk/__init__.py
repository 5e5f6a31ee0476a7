"""oaas-sdk: write Object-as-a-Service classes in Python; state persisted by a Rust core.

Public API (see ``docs/api.md``)::

    from oaas_sdk import oaas, OaasObject, OaasConfig, ref, ObjectRef, getter, setter
"""

from __future__ import annotations

import logging as _logging

from ._backend import native_available
from .compat import (
    DebugContext,
    DebugLevel,
    Session,
    StateDescriptor,
    configure_debug,
    configure_oaas,
    create_object,
    disable_auto_commit,
    enable_auto_commit,
    get_debug_context,
    load_object,
    set_debug_level,
)
from .config import OaasConfig
from .errors import (
    ConfigError,
    ConfigurationError,
    ConflictError,
    DecoratorError,
    OaasError,
    ObjectNotFound,
    RemoteError,
    SerializationError,
    SessionError,
    StorageError,
    ValidationError,
)
from .invocation import (
    InvocationRequest,
    InvocationResponse,
    ObjectInvocationRequest,
    ResponseStatus,
)

# Through the old module paths (aliases of oaas_sdk.model.*): importing them here first
# keeps the package attributes ``mapped`` and ``ref`` the functions, not the modules.
from .mapped import Mapped, mapped
from .methods import constructor, function, getter, method, setter
from .object import OaasObject, ObjectMeta, field
from .ref import ObjectRef, ref
from .service import AgentError, OaasService, ServerError, oaas

__version__ = "0.1.0"

# A library logs through its logger and leaves handlers to the application: without one
# configured, records go nowhere (not to Python's last-resort stderr handler).
_logging.getLogger("oaas_sdk").addHandler(_logging.NullHandler())

__all__ = [
    "oaas", "OaasService", "OaasObject", "OaasConfig", "ObjectMeta", "ObjectRef", "ref",
    "field", "Mapped", "mapped", "getter", "setter", "method", "function", "constructor",
    "InvocationRequest", "ObjectInvocationRequest", "InvocationResponse", "ResponseStatus",
    "OaasError", "ObjectNotFound", "ValidationError", "SerializationError", "ConflictError",
    "StorageError", "ConfigError", "RemoteError", "ServerError", "AgentError",
    "DecoratorError", "native_available", "__version__",
    # oaas-sdk2-py compatibility (oaas_sdk.compat)
    "Session", "StateDescriptor", "DebugLevel", "DebugContext", "configure_debug",
    "set_debug_level", "get_debug_context", "create_object", "load_object", "configure_oaas",
    "enable_auto_commit", "disable_auto_commit", "SessionError", "ConfigurationError",
]
