//! Integration tests of the tickmesh binary and its services, over real sockets with real
//! clients (tonic, grpcurl, Python grpcio, Node grpc-js and Connect). One test binary, so it
//! links once.

// Helpers outside #[test] functions unwrap too: a panic is a failed test, as .clippy.toml says.
#![allow(clippy::unwrap_used)]

mod attacks;
mod cache_reload;
mod caching;
mod cli;
mod computation;
mod dashboard;
mod drain;
mod end_to_end;
mod export;
mod faults;
mod fresh_indicators;
mod freshness;
mod held_candles;
mod in_process;
mod ingestion;
mod mesh;
mod polyglot;
mod prometheus;
mod query;
mod reload;
mod resample;
mod sdk_mesh;
mod sdk_python;
mod sdk_typescript;
mod shutdown;
mod slow_consumers;
mod startup;
mod support;
mod takeover;
mod tracing;
mod web;
