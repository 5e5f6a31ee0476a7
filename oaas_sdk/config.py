"""Configuration of the SDK: :class:`OaasConfig`.

Every field can be set in code or from the environment as ``OAAS_<FIELD>`` (upper case),
read by pydantic-settings; values given in code win over the environment. The unprefixed
names that oaas-sdk2-py and the OaaS platform set (:data:`LEGACY_ENV`: ``HTTP_PORT``,
``MOCK_MODE``, ``OPRC_PARTITION_DEFAULT``, ...) are read too, with ``OAAS_*`` winning.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import pydantic
from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError

__all__ = ["OaasConfig", "LEGACY_ENV", "ENGINE_DEFAULTS"]

LEGACY_ENV: dict[str, str] = {
    "mock_mode": "MOCK_MODE",
    "async_mode": "ASYNC_MODE",
    "auto_commit": "AUTO_COMMIT",
    "batch_size": "BATCH_SIZE",
    "oprc_zenoh_peers": "OPRC_ZENOH_PEERS",
    "oprc_partition_default": "OPRC_PARTITION_DEFAULT",
    "http_port": "HTTP_PORT",
}
"""Field -> the unprefixed environment variable oaas-sdk2-py or the OaaS platform sets for
it. Read when ``OAAS_<FIELD>`` is not set."""


class _LegacyEnv(PydanticBaseSettingsSource):
    """Settings source of the unprefixed names in :data:`LEGACY_ENV` (below OAAS_*)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = LEGACY_ENV.get(field_name)
        value = os.environ.get(name) if name else None
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field_name, name in LEGACY_ENV.items():
            value = os.environ.get(name)
            if value is not None:
                out[field_name] = value
        return out


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
    store_wait_replicas: int = Field(
        default=0, ge=0,
        description="Redis stores: after each batch, WAIT until this many replicas of every "
        "node written hold it (0: no WAIT); a commit with durability=\"sync\" resolves "
        "only then. Fewer is retried until store_retry_deadline_s, then StorageError.",
    )
    store_wait_timeout_s: float = Field(
        default=1.0, gt=0,
        description="Redis stores: the timeout of each WAIT (store_wait_replicas), seconds.",
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
    # Serving and remote invocation (oaas_sdk.rpc).
    http_port: int = Field(
        default=8080, ge=0, lt=65536,
        description="Port of oaas.start_server()/run_or_gen() when none is given (0: any "
        "free port); also read from HTTP_PORT as the OaaS platform sets it."
    )
    server_host: str = Field(
        default="0.0.0.0", min_length=1,
        description="Address the server binds (\"127.0.0.1\": this host only)."
    )
    routes: dict[str, str] = Field(
        default_factory=dict,
        description='Remote classes: cls_id -> "host:port" of the process serving them. '
        'Keys "<package>.*" (a package) and "*" (everything not served here) are fallbacks. '
        "From the environment as JSON: OAAS_ROUTES='{\"example.Counter\": \"10.0.0.5:8080\"}'."
    )
    rpc_max_message_bytes: int = Field(
        default=16 << 20, ge=1024,
        description="Largest gRPC message (request or response) sent or received, in bytes."
    )
    rpc_timeout_s: float | None = Field(
        default=None, gt=0,
        description="Deadline of a remote call whose method declares no timeout, in seconds "
        "(None: no deadline)."
    )
    shutdown_grace_s: float = Field(
        default=20.0, ge=0,
        description="On SIGTERM/SIGINT, calls in flight get this long to finish, in seconds."
    )
    server_tls_cert: str | None = Field(
        default=None, min_length=1,
        description="PEM file of the server's certificate chain: with server_tls_key, the "
        "server speaks TLS (None: plaintext)."
    )
    server_tls_key: str | None = Field(
        default=None, min_length=1,
        description="PEM file of the private key of server_tls_cert."
    )
    server_tls_client_ca: str | None = Field(
        default=None, min_length=1,
        description="PEM file of the CAs client certificates must chain to: with it, the "
        "TLS server requires a client certificate (mutual TLS)."
    )
    rpc_tls: bool = Field(
        default=False,
        description="Remote calls use TLS (implied by rpc_tls_ca); servers are verified "
        "against rpc_tls_ca, else the system's CA certificates."
    )
    rpc_tls_ca: str | None = Field(
        default=None, min_length=1,
        description="PEM file of the CAs that remote servers' certificates must chain to; "
        "setting it turns TLS on for remote calls."
    )
    rpc_tls_cert: str | None = Field(
        default=None, min_length=1,
        description="PEM file of the client certificate remote calls present (mutual TLS), "
        "with rpc_tls_key."
    )
    rpc_tls_key: str | None = Field(
        default=None, min_length=1,
        description="PEM file of the private key of rpc_tls_cert."
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _LegacyEnv(settings_cls), dotenv_settings,
                file_secret_settings)

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

    @field_validator("routes", mode="before")
    @classmethod
    def _parse_routes(cls, v: Any) -> Any:
        if isinstance(v, str):  # a JSON object, as from OAAS_ROUTES
            try:
                return json.loads(v)
            except ValueError as e:
                raise ValueError(f"routes must be a JSON object: {e}") from None
        return v

    @field_validator("routes")
    @classmethod
    def _check_routes(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, given in v.items():
            target = given.strip()
            for scheme in ("grpc://", "http://"):  # accepted, as gRPC tools write them
                if target.startswith(scheme):
                    target = target[len(scheme):]
            target = target.rstrip("/")
            host, sep, port = target.rpartition(":")
            if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"route {key!r}: {given!r} is not \"host:port\"")
            out[key] = target
        return out

    def route_for(self, cls_id: str, served_here: bool = False) -> str | None:
        """The ``"host:port"`` serving ``cls_id`` per :attr:`routes`: the exact id, then
        ``"<package>.*"``, then (only when the class is not ``served_here``) ``"*"``;
        ``None`` when no route applies."""
        r = self.routes
        if not r:
            return None
        target = r.get(cls_id)
        if target is None:
            package = cls_id.rpartition(".")[0]
            target = r.get(f"{package}.*") if package else None
        if target is None and not served_here:
            target = r.get("*")
        return target

    def get_zenoh_peers(self) -> list[str] | None:
        """Zenoh peers as a list (oaas-sdk2-py compatibility)."""
        return None if self.oprc_zenoh_peers is None else self.oprc_zenoh_peers.split(",")


def _describe(e: pydantic.ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "?"
        parts.append(f"OaasConfig.{loc}: {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration: " + "; ".join(parts)


ENGINE_DEFAULTS: dict[str, Any] = {
    n: OaasConfig.model_fields[n].default
    for n in ("durability", "batch_max_entries", "batch_max_delay_ms", "pending_max_bytes")}
"""The engine settings' defaults, read from :class:`OaasConfig` (their one source): the
Python engines take them as their keyword defaults; the native engine has none and is
always given them (oaas_sdk/_backend.py)."""
