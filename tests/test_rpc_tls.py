"""TLS on both servers (native: tonic with rustls; Python: grpcio) and in oaas-sdk's client,
with a CA made in the test (trustme): a plain grpcio client trusting the CA gets answers,
one that does not (or speaks plaintext) gets none; mutual TLS refuses a client without a
certificate; the configuration's errors name the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme

from oaas_sdk import ConfigError, OaasConfig, oaas, ref
from oaas_sdk.rpc import client as rpc_client
from tests.conftest import IMPLS, _need_impl
from tests.rpc_support import PlainClient, ServiceProcess, compile_proto, write_service

OKAY = 0


class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as
    PEM files."""

    def __init__(self, d: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        client = self.ca.issue_cert("client.example")
        self.ca_pem = d / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.server_cert, self.server_key = d / "server.pem", d / "server.key"
        self.server_cert.write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.server_key))
        self.client_cert, self.client_key = d / "client.pem", d / "client.key"
        self.client_cert.write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
        client.private_key_pem.write_to_path(str(self.client_key))
        other = trustme.CA()  # a CA nobody here trusts
        self.other_ca_pem = d / "other-ca.pem"
        other.cert_pem.write_to_path(str(self.other_ca_pem))

    def credentials(self, ca: Path | None = None, client_cert: bool = False) -> Any:
        return grpc.ssl_channel_credentials(
            root_certificates=(ca or self.ca_pem).read_bytes(),
            private_key=self.client_key.read_bytes() if client_cert else None,
            certificate_chain=self.client_cert.read_bytes() if client_cert else None)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return compile_proto(tmp_path_factory.mktemp("proto"))


def _start(impl: str, d: Path, pki: Pki, mutual: bool) -> ServiceProcess:
    env = {"OAAS_SERVER_TLS_CERT": str(pki.server_cert),
           "OAAS_SERVER_TLS_KEY": str(pki.server_key)}
    if mutual:
        env["OAAS_SERVER_TLS_CLIENT_CA"] = str(pki.ca_pem)
    return ServiceProcess(write_service(d, "tlspkg", "tls_service.py"), impl, d / "store",
                          credentials=pki.credentials(client_cert=mutual), **env).start()


@pytest.fixture(scope="module", params=IMPLS)
def tls_served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               pki: Pki) -> Iterator[ServiceProcess]:
    _need_impl(request.param)
    svc = _start(request.param, tmp_path_factory.mktemp(f"tls-{request.param}"), pki,
                 mutual=False)
    try:
        yield svc
    finally:
        rc = svc.terminate()
        assert rc == 0, svc.output


def test_tls_server_answers_a_client_trusting_its_ca(tls_served: ServiceProcess, pki: Pki,
                                                    pb: tuple[Any, Any]) -> None:
    c = PlainClient(*pb, tls_served.target, credentials=pki.credentials())
    try:
        r = c.obj("add", b"5", object_id="1", cls_id="tlspkg.Counter")
        assert r.status == OKAY and json.loads(r.payload) == 5
        r = c.obj("add", b"5", object_id="1", cls_id="tlspkg.Counter")
        assert json.loads(r.payload) == 10
    finally:
        c.close()


@pytest.mark.parametrize("how", ["plaintext", "other CA"])
def test_tls_server_refuses_untrusting_or_plaintext_clients(
        tls_served: ServiceProcess, pki: Pki, pb: tuple[Any, Any], how: str) -> None:
    creds = None if how == "plaintext" else pki.credentials(ca=pki.other_ca_pem)
    c = PlainClient(*pb, tls_served.target, credentials=creds)
    try:
        with pytest.raises(grpc.RpcError) as ei:
            c.stub.InvokeObj(c.pb2.ObjectInvocationRequest(
                cls_id="tlspkg.Counter", fn_id="add", payload=b"1", object_id="2"),
                timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        c.close()
    # ... and the server still serves clients that trust it
    good = PlainClient(*pb, tls_served.target, credentials=pki.credentials())
    try:
        r = good.obj("get_count", object_id="2", cls_id="tlspkg.Counter")
        assert r.status == OKAY and json.loads(r.payload) == 0  # nothing written
    finally:
        good.close()


@pytest.fixture
def tls_client(impl: str, pki: Pki) -> Iterator[None]:
    """This process (implementation ``impl``) calls over TLS, trusting the test CA."""
    oaas.configure(OaasConfig(mock_mode=True, native="on" if impl == "native" else "off",
                              rpc_tls_ca=str(pki.ca_pem), rpc_tls_cert=str(pki.client_cert),
                              rpc_tls_key=str(pki.client_key)))
    yield
    oaas.configure(OaasConfig(mock_mode=True, native="off"))


async def test_oaas_client_calls_over_tls(tls_served: ServiceProcess, tls_client: None,
                                          impl: str) -> None:
    oaas.config.routes = {"tlspkg.*": tls_served.target}
    try:
        oid = 500 if impl == "python" else 600
        r = ref("tlspkg.Counter", oid)
        assert await r.add(2) == 2
        assert await r.combine(1, 2, tag="tls") == {"sum": 3.0, "tag": "tls", "rest": []}
        with pytest.raises(ValueError, match="over tls"):
            await r.boom("over tls")
        assert await r.get_count() == 2
    finally:
        await rpc_client.close_channels()


@pytest.mark.parametrize("impl_", IMPLS)
def test_mutual_tls_requires_a_client_certificate(impl_: str, tmp_path: Path, pki: Pki,
                                                  pb: tuple[Any, Any]) -> None:
    _need_impl(impl_)
    svc = _start(impl_, tmp_path, pki, mutual=True)
    try:
        anonymous = PlainClient(*pb, svc.target, credentials=pki.credentials())
        try:
            with pytest.raises(grpc.RpcError) as ei:
                anonymous.obj("hello", b'"x"', cls_id="tlspkg.Counter")
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            anonymous.close()
        known = PlainClient(*pb, svc.target, credentials=pki.credentials(client_cert=True))
        try:
            r = known.obj("hello", b'"x"', cls_id="tlspkg.Counter")
            assert r.status == OKAY and r.payload == b"hello x"
        finally:
            known.close()
    finally:
        rc = svc.terminate()
        assert rc == 0, svc.output


def test_in_process_server_reports_tls(impl: str, pki: Pki) -> None:
    oaas.configure(OaasConfig(mock_mode=True, native="on" if impl == "native" else "off",
                              server_host="127.0.0.1", server_tls_cert=str(pki.server_cert),
                              server_tls_key=str(pki.server_key)))
    try:
        oaas.start_server(port=0)
        try:
            info = oaas.get_server_info()
            assert info["tls"] is True and info["implementation"] == impl
        finally:
            oaas.stop_server(grace=0)
        assert oaas.get_server_info()["tls"] is False
    finally:
        oaas.configure(OaasConfig(mock_mode=True, native="off"))


@pytest.mark.parametrize("fields, message", [
    ({"server_tls_cert": "server.pem"}, "server_tls_key is not set"),
    ({"server_tls_key": "server.key"}, "server_tls_cert is not set"),
    ({"server_tls_client_ca": "ca.pem"}, "server_tls_client_ca needs"),
    ({"server_tls_cert": "missing.pem", "server_tls_key": "server.key"},
     "server_tls_cert: cannot read"),
    ({"server_tls_cert": "client.pem", "server_tls_key": "server.key"},
     "not a certificate and its private key"),
    ({"server_tls_cert": "server.key", "server_tls_key": "server.key"},
     "not a certificate and its private key"),
])
def test_bad_server_tls_settings_name_the_field(impl: str, pki: Pki, fields: dict[str, str],
                                                message: str) -> None:
    d = pki.ca_pem.parent
    oaas.configure(OaasConfig(mock_mode=True, native="on" if impl == "native" else "off",
                              server_host="127.0.0.1",
                              **{k: str(d / v) for k, v in fields.items()}))
    try:
        with pytest.raises(ConfigError, match=message):
            oaas.start_server(port=0)
        assert not oaas.is_server_running()
    finally:
        oaas.configure(OaasConfig(mock_mode=True, native="off"))


async def test_bad_client_tls_settings_name_the_field(tmp_path: Path) -> None:
    oaas.configure(OaasConfig(mock_mode=True, native="off", routes={"x.*": "127.0.0.1:1"},
                              rpc_tls_cert=str(tmp_path / "c.pem")))
    try:
        with pytest.raises(ConfigError, match="rpc_tls_key is not set"):
            await ref("x.Thing", 1).anything()
        oaas.config.rpc_tls_key = str(tmp_path / "c.key")
        with pytest.raises(ConfigError, match="rpc_tls_(cert|key): cannot read"):
            await ref("x.Thing", 1).anything()
    finally:
        oaas.configure(OaasConfig(mock_mode=True, native="off"))
