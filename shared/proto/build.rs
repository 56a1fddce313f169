//! Compiles the contracts under `proto/` with protox (no system protoc) and generates the prost
//! messages and tonic clients and servers, plus the file descriptor set that server reflection
//! serves.

use std::path::PathBuf;

use protox::prost::Message;

const FILES: &[&str] = &[
    "tickmesh/v1/market.proto",
    "tickmesh/v1/config.proto",
    "tickmesh/v1/ingestion.proto",
    "tickmesh/v1/computation.proto",
    "tickmesh/v1/caching.proto",
    "tickmesh/v1/query.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed={}", proto_root.display());
    let fds = protox::compile(FILES, [&proto_root])?;
    std::fs::write(out_dir.join("tickmesh_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
