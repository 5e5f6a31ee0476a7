"""pytest plugin of oaas-sdk (entry point ``pytest11``): loaded by pytest automatically.

Fixture ``oaas_runtime``: a fresh SDK runtime for one test; yields the ``oaas`` facade::

    def test_counter(oaas_runtime):
        c = Counter.create(count=1)
        ...

    @pytest.mark.oaas(storage="lmdb", durability="async")
    async def test_durable(oaas_runtime):
        ...

The store is in memory unless the ``oaas`` marker says ``storage="lmdb"`` (a fresh LMDB
store in a temporary directory of this test) or gives a storage string of its own; the
marker's other keyword arguments are :class:`~oaas_sdk.OaasConfig` fields (``native``,
``durability``, ``auto_commit``, ...; the rest of the configuration comes from the
``OAAS_*`` environment as usual). After the test the runtime is flushed and closed, and
the configuration active before the test is restored (a fresh runtime of it: objects of
the test are detached, and a memory store starts empty).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .service import OaasService

__all__ = ["oaas_runtime", "pytest_configure"]

_MARKER_HELP = (
    "oaas(storage='memory'|'lmdb'|<storage string>, **config): configure the oaas_runtime "
    "fixture of this test: the store (default in memory; 'lmdb': a temporary LMDB store) "
    "and other OaasConfig fields"
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``oaas`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line("markers", _MARKER_HELP)


def _config_kwargs(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    marker = request.node.get_closest_marker("oaas")
    kwargs: dict[str, Any] = {}
    if marker is not None:
        if marker.args:
            raise pytest.UsageError(
                f"@pytest.mark.oaas takes keyword arguments only (OaasConfig fields), got "
                f"{marker.args!r} on {request.node.nodeid}")
        kwargs.update(marker.kwargs)
    storage = kwargs.pop("storage", "memory")
    if storage == "lmdb":
        storage = f"lmdb:{tmp_path_factory.mktemp('oaas-store', numbered=True)}"
    kwargs["storage"] = storage
    kwargs.setdefault("mock_mode", False)  # the marker's store wins over OAAS_MOCK_MODE
    return kwargs


@pytest.fixture
def oaas_runtime(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[OaasService]:
    """A fresh runtime for this test (see the module docstring); yields ``oaas``.

    Raises ``pytest.UsageError`` for a marker with positional arguments or a field
    ``OaasConfig`` refuses (the message names it).
    """
    from . import runtime as _rt
    from .config import OaasConfig
    from .errors import ConfigError
    from .service import oaas

    try:
        config = OaasConfig(**_config_kwargs(request, tmp_path_factory))
    except ConfigError as e:
        raise pytest.UsageError(f"@pytest.mark.oaas on {request.node.nodeid}: {e}") from None
    previous = _rt._current
    oaas.configure(config)  # flushes and closes what was active; opens the store now
    try:
        yield oaas
        oaas.flush()
    finally:
        _restore(previous)


def _restore(previous: Any) -> None:
    """Close the test's runtime; activate a fresh runtime of the previous configuration
    (or none, as before the first use)."""
    from . import runtime as _rt

    if previous is not None:
        _rt.configure(previous.config)  # closes the test's runtime; store opened lazily
        return
    with _rt._lock:
        rt = _rt._current
        _rt._set(None)  # type: ignore[arg-type]
    if rt is not None:
        rt.close()
