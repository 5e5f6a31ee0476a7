//! Room of the RPC layer: the tonic server of the OaaS `oprc.OprcFunction` protocol
//! (docs/rpc.md) and the `Invoker` trait it calls per request go here, without pyo3; the
//! bindings crate adds the glue that enters Python once per request.
//!
//! Empty for now: invocations are served by the Python server (`oaas_sdk.rpc`).
