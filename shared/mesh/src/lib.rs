//! How tickmesh services are served: health, reflection (v1 and v1alpha) and the config service
//! next to every service, bind-first start-up that exposes the bound address, and graceful
//! shutdown (health goes NOT_SERVING, in-flight calls drain within the grace period).

pub mod breaker;
pub mod config_service;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod serve;
pub mod shed;
pub mod shutdown;
pub mod status;
pub mod token_bucket;

pub use config_service::{ConfigHandle, ConfigSnapshot};
pub use metrics::Metrics;
pub use serve::{Running, ServeError, Service, serve};
pub use shutdown::Shutdown;
