"""Configuration of the SDK: :class:`OaasConfig`.

Every field can be set in code or from the environment as ``OAAS_<FIELD>`` (upper case),
read by pydantic-settings; values given in code win over the environment.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

__all__ = ["OaasConfig"]


class OaasConfig(BaseSettings):
    """Process-wide SDK settings, passed to ``oaas.configure()``.

    Raises :class:`~oaas_sdk.errors.ConfigError` (a ``ValueError``) naming the field when a
    value is invalid, e.g. ``OaasConfig(durability="maybe")``.
    """

    model_config = SettingsConfigDict(
        env_prefix="OAAS_", extra="ignore", validate_assignment=True, frozen=False
    )

    mock_mode: bool = Field(
        default=False, description="In-memory store, nothing persisted (for tests)."
    )
    async_mode: bool = Field(default=True, description="Kept for oaas-sdk2-py compatibility.")
    auto_commit: bool = Field(
        default=True, description="Commit after every method call that changed state."
    )
    storage: str = Field(
        default="lmdb:./.oaas",
        description='"lmdb:<dir>" (embedded default), "memory", "redis://host:port/db" '
        '("rediss://" with TLS) or "redis+cluster://host:port,host:port".',
    )
    cache_max_bytes: int = Field(
        default=256 << 20, ge=0, description="Bound of the entry cache, in bytes (0: no cache)."
    )
    cache_ttl_s: float | None = Field(
        default=None, gt=0,
        description="Time-to-live of cached entries, in seconds. With a shared store "
        "(Redis) the entry cache is used only when this is set: it bounds how long a "
        "commit of another process can go unseen.",
    )
    store_retry_deadline_s: float = Field(
        default=30.0, ge=0,
        description="Redis stores: how long a write or read is retried (with backoff) "
        "while the server cannot be reached, in seconds; then StorageError.",
    )
    durability: Literal["sync", "async"] = Field(
        default="sync",
        description='"sync": a commit resolves after the batch is fsynced; '
        '"async": once queued (write-back).',
    )
    batch_max_entries: int = Field(
        default=4096, ge=1, description="A group-commit batch closes at this many entries."
    )
    batch_max_delay_ms: float = Field(
        default=2.0, ge=0,
        description="...or this long after its first record, in ms; waited only when the "
        "previous batch held more than one commit (a lone committer is written at once), "
        "and only until the batch holds as many commits as the previous one."
    )
    pending_max_bytes: int = Field(
        default=256 << 20, ge=0,
        description="Write throttling: a commit waits while more than this many bytes of "
        "entry values are queued and not yet written (0: no bound). Bounds the memory of "
        'write-back (durability="async") when the store is slower than the writers.'
    )
    native: Literal["auto", "on", "off"] = Field(
        default="auto",
        description='"auto": native extension when it imports; "on": require it; "off": Python.',
    )
    # oaas-sdk2-py compatibility fields.
    oprc_zenoh_peers: str | None = Field(default=None, description="Unused (compatibility).")
    oprc_partition_default: int = Field(
        default=0, ge=0, lt=2**32, description="Partition id of objects created here."
    )
    batch_size: int = Field(default=100, description="Deprecated in oaas-sdk2-py; unused.")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except pydantic.ValidationError as e:
            raise ConfigError(_describe(e)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except pydantic.ValidationError as e:
            raise ConfigError(_describe(e)) from None

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, v: str) -> str:
        from .stores import parse_storage_url

        parse_storage_url(v)
        return v

    def get_zenoh_peers(self) -> list[str] | None:
        """Zenoh peers as a list (oaas-sdk2-py compatibility)."""
        return None if self.oprc_zenoh_peers is None else self.oprc_zenoh_peers.split(",")


def _describe(e: pydantic.ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "?"
        parts.append(f"OaasConfig.{loc}: {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration: " + "; ".join(parts)
