"""The protocol's messages: the descriptor built in code is the one protoc compiles from
``oaas_sdk/rpc/oprc.proto``, and both encode the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from oaas_sdk import InvocationResponse, ResponseStatus
from oaas_sdk.rpc import messages as m
from tests.rpc_support import compile_proto


@pytest.fixture(scope="module")
def pb2(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return compile_proto(tmp_path_factory.mktemp("proto"))[0]


def test_descriptor_matches_the_proto_file(pb2: Any) -> None:
    compiled = descriptor_pb2.FileDescriptorProto.FromString(pb2.DESCRIPTOR.serialized_pb)
    assert compiled == m.file_descriptor_proto()
    assert m.PROTO_FILE.exists()


def test_same_bytes_as_generated_code(pb2: Any) -> None:
    kw = dict(partition_id=7, cls_id="example.Counter", fn_id="add",
              options={"a": "b"}, payload=b"\x00\x01", object_id="42")
    ours = m.PbObjectInvocationRequest(**kw).SerializeToString(deterministic=True)
    theirs = pb2.ObjectInvocationRequest(**kw).SerializeToString(deterministic=True)
    assert ours == theirs
    resp = pb2.InvocationResponse(payload=b"", status=pb2.APP_ERROR, headers={"h": "v"},
                                  invocation_id="i")
    back = m.response_from_pb(m.PbInvocationResponse.FromString(resp.SerializeToString()))
    assert back == InvocationResponse(payload=b"", status=ResponseStatus.APP_ERROR,
                                      headers={"h": "v"}, invocation_id="i")
    # an absent payload stays distinguishable from an empty one
    none = m.response_to_pb(InvocationResponse(payload=None)).SerializeToString()
    assert not pb2.InvocationResponse.FromString(none).HasField("payload")


def test_object_id_fields() -> None:
    req = m.object_request_from_pb(m.PbObjectInvocationRequest(object_id="alice",
                                                               legacy_object_id=5))
    assert req.object_id == "alice"  # field 7 wins
    req = m.object_request_from_pb(m.PbObjectInvocationRequest(legacy_object_id=5))
    assert req.object_id == "5"
    assert m.object_request_from_pb(m.PbObjectInvocationRequest()).object_id is None
    assert m.object_request_from_pb(m.PbObjectInvocationRequest(object_id="")).object_id \
        == ""


def test_private_descriptor_pool_does_not_clash(tmp_path: Path, pb2: Any) -> None:
    # the generated module registered "oprc.proto" in the default pool; ours is separate
    assert m.PbInvocationRequest.DESCRIPTOR.file.pool is not pb2.DESCRIPTOR.pool
