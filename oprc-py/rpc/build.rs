//! Generates the `oprc` protobuf messages and the `OprcFunction` service from
//! `oaas_sdk/rpc/oprc.proto` (the one protocol file of the project) without a system
//! `protoc`: protox, the pure-Rust protobuf compiler, parses it into descriptors and
//! tonic-prost-build generates prost messages and tonic server/client code from them.
//! The generated code uses `crate::codec::OprcCodec` (statuses of malformed messages).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let dir = manifest.join("../../oaas_sdk/rpc");
    let proto = dir.join("oprc.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&dir])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::OprcCodec")
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
