//! What a tickmesh process tells its operators: structured logs and OTLP traces ([`logging`]),
//! one span per RPC on both sides of a call ([`trace`]), and Prometheus metrics ([`metrics`]).

pub mod logging;
pub mod metrics;
pub mod trace;
