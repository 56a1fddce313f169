//! How tickmesh services serve and call each other, laid out by stack:
//!
//! - [`server`]: serving one service with health, reflection and the config service next to it,
//!   behind the server stack (classify, trace, metrics, auth, rate limit, load shedding, default
//!   deadline, message size), bind-first start-up and graceful shutdown;
//! - [`client`]: the stack one service calls another through (trace, retry, circuit breaker,
//!   deadline, power-of-two-choices balancing over the resolved replicas);
//! - [`telemetry`]: logs, traces and metrics;
//! - shared by both stacks: what the contracts say about each method ([`methods`]), the typed
//!   refusals and their one conversion to a status ([`status`]), the plumbing every hand-written
//!   layer shares ([`layer`]), TLS files ([`tls`]), and the process's shutdown signal
//!   ([`shutdown`]).

pub mod client;
pub mod layer;
pub mod methods;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod tls;

pub use server::{Running, ServeError, Service, serve};
pub use shutdown::Shutdown;
pub use telemetry::metrics::Metrics;
pub use tickmesh_config::{ConfigHandle, ConfigSnapshot};
