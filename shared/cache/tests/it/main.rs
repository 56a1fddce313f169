#![allow(clippy::unwrap_used)]
//! The cache against a real, throwaway Redis (tickmesh-testkit): stampede protection in one and
//! across two processes, cross-process invalidation, degradation when Redis goes away,
//! refresh-ahead, policies and bad input.
//!
//! Two `Cache` values in one test process stand in for two pods: each has its own L1 and its
//! own origin id, and they share only Redis.

mod helpers;

mod bad_input;
mod degradation;
mod invalidation;
mod outage;
mod policies;
mod refresh;
mod reload;
mod stampede;
