//! Compiles the LMDB sources in `lmdb/` (always: unlike the crates.io release, never a
//! system liblmdb found by pkg-config, whose version and lock format nobody chose).

use std::env;
use std::path::PathBuf;

fn main() {
    let lmdb = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("lmdb");
    for file in ["mdb.c", "midl.c", "lmdb.h", "midl.h"] {
        println!("cargo:rerun-if-changed={}", lmdb.join(file).display());
    }

    let mut builder = cc::Build::new();
    builder
        // The crates.io release's value (its default feature set): the size of the
        // in-memory page lists, not part of the file format.
        .define("MDB_IDL_LOGN", Some("16"))
        .file(lmdb.join("mdb.c"))
        .file(lmdb.join("midl.c"))
        // The flags of LMDB's own Makefile, as the crates.io release passes them.
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wbad-function-cast")
        .flag_if_supported("-Wuninitialized");

    if env::var("CARGO_FEATURE_WITH_ASAN").is_ok() {
        builder.flag("-fsanitize=address");
    }
    if env::var("CARGO_FEATURE_WITH_FUZZER").is_ok() {
        builder.flag("-fsanitize=fuzzer");
    } else if env::var("CARGO_FEATURE_WITH_FUZZER_NO_LINK").is_ok() {
        builder.flag("-fsanitize=fuzzer-no-link");
    }

    builder.compile("liblmdb.a");
}
