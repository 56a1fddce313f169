//! Resilience primitives with no I/O of their own, used by the client stack, the server's rate
//! limit, the cache's Redis tier and replay: a circuit breaker and a token bucket.

pub mod breaker;
pub mod token_bucket;

pub use breaker::{BreakerState, CircuitBreaker};
pub use token_bucket::TokenBucket;
