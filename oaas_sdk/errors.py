"""Errors raised by oaas-sdk.

Every error the SDK raises on purpose derives from :class:`OaasError`. Errors from the native
extension are converted to these classes at the boundary; a Rust panic never reaches users
as anything but one of them.
"""

from __future__ import annotations

__all__ = [
    "OaasError",
    "ObjectNotFound",
    "ValidationError",
    "SerializationError",
    "ConflictError",
    "StorageError",
    "ConfigError",
    "DecoratorError",
    "SessionError",
    "ConfigurationError",
    "RemoteError",
]


class OaasError(Exception):
    """Base class of every error raised by oaas-sdk."""


class ObjectNotFound(OaasError, KeyError):
    """No object with the requested identity exists in the store.

    Also a :class:`KeyError`, so ``except KeyError`` keeps working. ``str()`` gives the plain
    message (not the quoted form ``KeyError`` uses).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ValidationError(OaasError, ValueError):
    """A value could not be converted to a field's or parameter's declared type.

    Also a :class:`ValueError`. The message names the class and field (or method and
    parameter); the field keeps its old value.
    """


class SerializationError(OaasError):
    """A value could not be encoded, or stored bytes could not be decoded.

    On decode the message names the object and the field whose entry is corrupt.
    """


class ConflictError(OaasError):
    """Another writer committed the object since this process loaded it.

    The commit wrote nothing; the object keeps its uncommitted changes. Reload the object
    (``Cls.load(id)`` after ``obj.refresh()`` or in a new process) and apply the change again.
    """


class StorageError(OaasError):
    """The store failed. The message says which store and why; nothing committed is lost."""


class ConfigError(OaasError, ValueError):
    """The configuration is invalid or cannot be honoured (for example ``native="on"``
    without the native extension)."""


class DecoratorError(OaasError):
    """A method or function declared with ``retry_count > 0`` failed on every attempt.

    Raised from the last attempt's exception (``__cause__``), as oaas-sdk2-py does; the
    message names the method and the number of attempts. ``attempts`` (int) and
    ``last_error`` (the last exception) give the same as attributes. With
    ``retry_count=0`` (the default) a method's own exception propagates unchanged.
    """

    def __init__(self, message: str, *, attempts: int = 0,
                 last_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class SessionError(OaasError):
    """oaas-sdk2-py's error of session operations, kept so code that catches it imports;
    oaas-sdk has no session of its own and raises the specific errors above instead."""


#: oaas-sdk2-py's name of :class:`ConfigError`.
ConfigurationError = ConfigError


class RemoteError(OaasError):
    """A remote invocation failed on the other side.

    Raised by calls through an :class:`~oaas_sdk.ObjectRef` to an object served by another
    process when the remote exception is neither a builtin exception type nor an oaas-sdk
    error (those are re-raised as their own type). A remote exception type ``MyError``
    arrives as a subclass of this class named ``MyError``. Attributes: ``status`` (the
    protocol's ``ResponseStatus`` name, e.g. ``"APP_ERROR"``), ``remote_type`` (the remote
    exception's type name, or ``""``), ``target`` (``"host:port"``).
    """

    status: str = ""
    remote_type: str = ""
    target: str = ""
