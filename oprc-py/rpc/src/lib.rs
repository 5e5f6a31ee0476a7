//! `oprc-rpc`: the OaaS invocation protocol (`oprc.OprcFunction`, see
//! `oaas_sdk/rpc/oprc.proto` and docs/rpc.md) on tonic and tokio, without Python.
//!
//! * [`pb`]: the protobuf messages, server and client, generated at build time from the
//!   project's `oprc.proto` (protox + tonic-prost-build: no system `protoc`).
//! * [`server`]: the gRPC server. Each call is decoded and handed to an [`Invoker`]
//!   (the Python bindings implement it by running `oaas_sdk.rpc.server` on the
//!   application's event loop; [`EchoInvoker`] answers with the payload); limits
//!   (largest message: `RESOURCE_EXHAUSTED`, malformed protobuf: `INVALID_ARGUMENT`), the
//!   standard health service, graceful shutdown (calls in flight finish within a grace
//!   period).
//! * `examples/echo_server.rs` (the benchmark's floor) and `examples/loadgen.rs` (the
//!   load generator of `benchmarks/rpc.py`).

pub mod codec;
pub mod server;

/// The generated protobuf code of package `oprc`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("oprc");
}

pub use server::{
    start, CallKind, EchoInvoker, Invocation, Invoker, RunningServer, ServerConfig, TlsConfig,
};
