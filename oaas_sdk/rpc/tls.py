"""TLS of the OaaS gRPC server and client, from the configuration (docs/rpc.md, "TLS").

Server: ``OaasConfig.server_tls_cert`` and ``server_tls_key`` (PEM files) turn TLS on;
``server_tls_client_ca`` (PEM) also requires client certificates chaining to those CAs.
Client: ``rpc_tls_ca`` (PEM CA bundle; else ``rpc_tls=True`` with the system's CAs) turns
TLS on for remote calls; ``rpc_tls_cert``/``rpc_tls_key`` add a client certificate.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import OaasConfig

__all__ = ["ServerTls", "server_tls", "client_credentials"]


@dataclass(frozen=True, repr=False)
class ServerTls:
    """PEM bytes of the server's certificate chain and key, and of the CAs client
    certificates must chain to (``None``: clients present none)."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None = None

    def __repr__(self) -> str:  # never the key
        return (f"ServerTls(cert_pem=<{len(self.cert_pem)} bytes>, "
                f"client_ca={self.client_ca_pem is not None})")


def _read(field: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{field}: cannot read {path!r}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{field}: {path!r} is not a PEM file")
    return data


def server_tls(cfg: OaasConfig) -> ServerTls | None:
    """The server's TLS material from ``cfg`` (``None``: plaintext). Raises
    :class:`ConfigError` naming the field when only one of ``server_tls_cert`` and
    ``server_tls_key`` is set, ``server_tls_client_ca`` is set without them, or a file
    cannot be read or is not PEM."""
    cert, key, ca = cfg.server_tls_cert, cfg.server_tls_key, cfg.server_tls_client_ca
    if cert is None and key is None:
        if ca is not None:
            raise ConfigError("server_tls_client_ca needs server_tls_cert and server_tls_key")
        return None
    if cert is None or key is None:
        missing = "server_tls_key" if key is None else "server_tls_cert"
        raise ConfigError(f"TLS needs server_tls_cert and server_tls_key: {missing} is "
                          f"not set")
    tls = ServerTls(_read("server_tls_cert", cert), _read("server_tls_key", key),
                    None if ca is None else _read("server_tls_client_ca", ca))
    # the same checks for both servers, before anything binds: the key belongs to the
    # certificate, the CA file holds certificates
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError(f"server_tls_cert/server_tls_key: {cert!r} and {key!r} are not a "
                          f"certificate and its private key: {e}") from None
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(f"server_tls_client_ca: {ca!r} holds no CA certificate: "
                              f"{e}") from None
    return tls


def client_credentials(cfg: OaasConfig) -> Any:
    """``grpc.ChannelCredentials`` for remote calls, or ``None`` for plaintext. Raises
    :class:`ConfigError` naming the field when only one of ``rpc_tls_cert`` and
    ``rpc_tls_key`` is set or a file cannot be read or is not PEM."""
    ca, cert, key = cfg.rpc_tls_ca, cfg.rpc_tls_cert, cfg.rpc_tls_key
    if (cert is None) != (key is None):
        missing = "rpc_tls_key" if key is None else "rpc_tls_cert"
        raise ConfigError(f"a client certificate needs rpc_tls_cert and rpc_tls_key: "
                          f"{missing} is not set")
    if ca is None and not cfg.rpc_tls and cert is None:
        return None
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=None if ca is None else _read("rpc_tls_ca", ca),
        private_key=None if key is None else _read("rpc_tls_key", key),
        certificate_chain=None if cert is None else _read("rpc_tls_cert", cert))
