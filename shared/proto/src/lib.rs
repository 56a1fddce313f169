//! Rust code generated from the tickmesh contracts in `proto/tickmesh/v1`.
//!
//! Generated at build time (protox + tonic-prost-build); nothing generated is committed.

pub mod codec;
pub mod domain;

pub use domain::{Symbol, SymbolError};

/// `tickmesh.v1`: market data types, the four services and the configuration schema.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tickmesh.v1");
}

/// Encoded `FileDescriptorSet` of every tickmesh proto file (with the well-known types it
/// imports), served by gRPC server reflection and used to map config files onto messages.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tickmesh_descriptor.bin"));

/// Full gRPC names of the tickmesh services, as health checks and reflection report them.
pub mod service_names {
    /// `tickmesh.v1.IngestionService`.
    pub const INGESTION: &str = "tickmesh.v1.IngestionService";
    /// `tickmesh.v1.ComputationService`.
    pub const COMPUTATION: &str = "tickmesh.v1.ComputationService";
    /// `tickmesh.v1.CachingService`.
    pub const CACHING: &str = "tickmesh.v1.CachingService";
    /// `tickmesh.v1.QueryService`.
    pub const QUERY: &str = "tickmesh.v1.QueryService";
    /// `tickmesh.v1.ConfigService`.
    pub const CONFIG: &str = "tickmesh.v1.ConfigService";
}
