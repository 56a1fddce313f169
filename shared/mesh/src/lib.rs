//! How tickmesh services are served: health, reflection (v1 and v1alpha) and the config service
//! next to every service, bind-first start-up that exposes the bound address, and graceful
//! shutdown (health goes NOT_SERVING, in-flight calls drain within the grace period).

pub mod auth;
pub mod breaker;
pub mod config_service;
pub mod config_watch;
pub mod connect;
pub mod deadline;
pub mod health;
pub mod logging;
pub mod message_size;
pub mod methods;
pub mod metrics;
pub mod rate_limit;
pub mod serve;
pub mod shed;
pub mod shutdown;
pub mod status;
pub mod token_bucket;
pub mod trace;

pub use config_service::{ConfigHandle, ConfigSnapshot};
pub use metrics::Metrics;
pub use serve::{Running, ServeError, Service, serve};
pub use shutdown::Shutdown;
