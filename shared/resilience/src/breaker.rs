//! A circuit breaker: closed, open after `failure_threshold` consecutive failures, half-open
//! after `open_duration` (one probe at a time), closed again after `success_threshold`
//! consecutive successes.

use std::time::{Duration, Instant};

use tickmesh_proto::v1::CircuitBreakerConfig;
use tracing::{info, warn};

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast until the instant.
    Open {
        /// When a probe may go through.
        until: Instant,
    },
    /// One probe at a time goes through.
    HalfOpen {
        /// A probe is in flight.
        probing: bool,
    },
}

/// A circuit breaker in front of one target (a peer service, Redis, a data source).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    name: String,
    failure_threshold: u32,
    success_threshold: u32,
    open_duration: Duration,
    state: BreakerState,
    failures: u32,
    successes: u32,
}

impl CircuitBreaker {
    /// A closed breaker named after its target.
    pub fn new(name: impl Into<String>, config: &CircuitBreakerConfig) -> Self {
        Self {
            name: name.into(),
            failure_threshold: config.failure_threshold.max(1),
            success_threshold: config.success_threshold.max(1),
            open_duration: tickmesh_config::std_duration(config.open_duration.as_ref()),
            state: BreakerState::Closed,
            failures: 0,
            successes: 0,
        }
    }

    /// Takes new thresholds (a configuration change); the state and its counts stay.
    pub fn reconfigure(&mut self, config: &CircuitBreakerConfig) {
        self.failure_threshold = config.failure_threshold.max(1);
        self.success_threshold = config.success_threshold.max(1);
        self.open_duration = tickmesh_config::std_duration(config.open_duration.as_ref());
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go through now; `Err` carries how long the circuit stays open.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { until } if now >= until => {
                info!(
                    target_name = self.name,
                    "circuit half-open: letting a probe through"
                );
                self.state = BreakerState::HalfOpen { probing: true };
                self.successes = 0;
                Ok(())
            }
            BreakerState::Open { until } => Err(until - now),
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                Ok(())
            }
            // One probe at a time; others wait a short while.
            BreakerState::HalfOpen { probing: true } => Err(Duration::from_millis(50)),
        }
    }

    /// Records a successful call.
    pub fn success(&mut self) {
        self.failures = 0;
        if let BreakerState::HalfOpen { .. } = self.state {
            self.successes += 1;
            if self.successes >= self.success_threshold {
                info!(target_name = self.name, "circuit closed");
                self.state = BreakerState::Closed;
            } else {
                self.state = BreakerState::HalfOpen { probing: false };
            }
        }
    }

    /// Records a failed call.
    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        let trip = match self.state {
            BreakerState::HalfOpen { .. } => true,
            BreakerState::Closed => self.failures >= self.failure_threshold,
            BreakerState::Open { .. } => false,
        };
        if trip {
            warn!(
                target_name = self.name,
                failures = self.failures,
                open_ms = self.open_duration.as_millis() as u64,
                "circuit open"
            );
            self.state = BreakerState::Open {
                until: now
                    .checked_add(self.open_duration)
                    .unwrap_or(now + Duration::from_secs(86_400)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            "feed",
            &CircuitBreakerConfig {
                failure_threshold: 3,
                success_threshold: 2,
                open_duration: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                probe_interval: None,
            },
        )
    }

    #[test]
    fn it_opens_after_the_threshold_and_fails_fast_while_open() {
        let t = Instant::now();
        let mut b = breaker();
        b.failure(t);
        b.failure(t);
        assert!(b.admit(t).is_ok());
        b.failure(t);
        assert_eq!(b.admit(t), Err(Duration::from_secs(10)));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t = Instant::now();
        let mut b = breaker();
        b.failure(t);
        b.failure(t);
        b.success();
        b.failure(t);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_after_enough_successes() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(t);
        }
        let later = t + Duration::from_secs(10);
        assert!(b.admit(later).is_ok());
        assert!(b.admit(later).is_err(), "a second probe waits");
        b.success();
        assert!(b.admit(later).is_ok());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(t);
        }
        let later = t + Duration::from_secs(10);
        assert!(b.admit(later).is_ok());
        b.failure(later);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }
}
