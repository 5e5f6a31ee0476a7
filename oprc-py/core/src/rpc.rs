//! The RPC layer is the workspace crate `rpc/` (`oprc-rpc`): the tonic server of the OaaS
//! `oprc.OprcFunction` protocol (docs/rpc.md) and the `Invoker` trait it calls per
//! request, without pyo3; the bindings crate (`src/rpc.rs`) adds the glue that enters
//! Python once per request. Nothing of it lives in the core.
