"""Choice of implementation: the native extension ``oaas_sdk._native`` or pure Python."""

from __future__ import annotations

import logging
from types import ModuleType

from .errors import ConfigError

log = logging.getLogger("oaas_sdk")

_native: ModuleType | None = None
_import_error: BaseException | None = None
try:
    from . import _native as _native_mod

    _native = _native_mod
except ImportError as e:  # extension not built or not importable here
    _import_error = e


def native_module(mode: str) -> ModuleType | None:
    """The extension for ``native=mode``: the module, or ``None`` for the Python path.

    ``"auto"``: the module when it imports; ``"on"``: the module, or :class:`ConfigError`
    when it is missing; ``"off"``: ``None``.
    """
    if mode == "off":
        return None
    if _native is None:
        if mode == "on":
            raise ConfigError(f"native='on' but the extension oaas_sdk._native is missing: "
                              f"{_import_error}")
        log.debug("native extension unavailable, using the Python implementation: %s",
                  _import_error)
    return _native


def native_available() -> bool:
    """Whether ``oaas_sdk._native`` imported in this process."""
    return _native is not None
