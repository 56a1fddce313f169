//! Compiles the contracts under `proto/` with protox (no system protoc) and generates the prost
//! messages and tonic clients and servers, plus the file descriptor set that server reflection
//! serves.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "tickmesh/v1/options.proto",
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
    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(FILES)?;
    // Encoded by protox itself: going through prost_types would drop the custom method options
    // (`tickmesh.v1.required_scope`) that the auth layer reads.
    std::fs::write(
        out_dir.join("tickmesh_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
