//! Generates the prost messages and the tonic clients and servers (`LogStore`,
//! `MilvusWal`) from `proto/*.proto` at build time.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate, so building needs no
//! system installation. The path is handed to prost-build directly
//! (`Config::protoc_executable`) instead of through the `PROTOC` environment
//! variable: in edition 2024 `std::env::set_var` is `unsafe`, and the workspace
//! forbids unsafe code. The effect is the same; a `PROTOC` set by the caller is
//! deliberately not consulted so every machine uses the same compiler.

use std::error::Error;

const PROTO_DIR: &str = "proto";
const PROTOS: [&str; 3] = [
    "proto/meta.proto",
    "proto/logstore.proto",
    "proto/milvus_wal.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // Payloads are handed to storage and back without copying.
        .bytes(".")
        // Sorted maps make encodings deterministic (stable etcd values, golden tests).
        .btree_map(".")
        .compile_with_config(config, &PROTOS, &[PROTO_DIR])?;
    Ok(())
}
