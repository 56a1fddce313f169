//! A circuit breaker: closed, open after `failure_threshold` consecutive failures, half-open
//! (one probe at a time) after a wait, closed again after `success_threshold` consecutive
//! successes.
//!
//! The first wait of an open circuit is `probe_interval`; each failed probe doubles it, up to
//! `open_duration`; a success resets it. So a blip costs about `probe_interval`, while a target
//! that stays down is probed ever less often. Without `probe_interval` every wait is
//! `open_duration` (configurations written before the field).

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
    /// The first wait of an open circuit; `None`: always `open_duration`.
    probe_interval: Option<Duration>,
    /// The wait of the last opening (zero: none since the last success).
    last_wait: Duration,
    state: BreakerState,
    failures: u32,
    successes: u32,
}

/// `open_duration` and `probe_interval` of a configuration; a zero probe interval (which could
/// never grow) counts as unset, and one above `open_duration` is cut to it.
fn waits(config: &CircuitBreakerConfig) -> (Duration, Option<Duration>) {
    let open = tickmesh_config::std_duration(config.open_duration.as_ref());
    let probe = config
        .probe_interval
        .as_ref()
        .map(|d| tickmesh_config::std_duration(Some(d)))
        .filter(|d| !d.is_zero())
        .map(|d| d.min(open));
    (open, probe)
}

impl CircuitBreaker {
    /// A closed breaker named after its target.
    pub fn new(name: impl Into<String>, config: &CircuitBreakerConfig) -> Self {
        let (open_duration, probe_interval) = waits(config);
        Self {
            name: name.into(),
            failure_threshold: config.failure_threshold.max(1),
            success_threshold: config.success_threshold.max(1),
            open_duration,
            probe_interval,
            last_wait: Duration::ZERO,
            state: BreakerState::Closed,
            failures: 0,
            successes: 0,
        }
    }

    /// Takes new thresholds and waits (a configuration change); the state and its counts stay.
    pub fn reconfigure(&mut self, config: &CircuitBreakerConfig) {
        self.failure_threshold = config.failure_threshold.max(1);
        self.success_threshold = config.success_threshold.max(1);
        (self.open_duration, self.probe_interval) = waits(config);
    }

    /// The wait of the next opening: `probe_interval` after a success, twice the last wait
    /// after a failed probe, never above `open_duration`.
    fn next_wait(&self) -> Duration {
        match self.probe_interval {
            None => self.open_duration,
            Some(first) if self.last_wait.is_zero() => first,
            Some(_) => self.last_wait.saturating_mul(2).min(self.open_duration),
        }
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
        self.last_wait = Duration::ZERO;
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
            let wait = self.next_wait();
            self.last_wait = wait;
            warn!(
                target_name = self.name,
                failures = self.failures,
                open_ms = wait.as_millis() as u64,
                "circuit open"
            );
            self.state = BreakerState::Open {
                until: now
                    .checked_add(wait)
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

    fn growing() -> CircuitBreaker {
        CircuitBreaker::new(
            "redis",
            &CircuitBreakerConfig {
                failure_threshold: 1,
                success_threshold: 1,
                open_duration: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                probe_interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 500_000_000,
                }),
            },
        )
    }

    /// Lets the probe through when the circuit allows it; the wait it had.
    fn probe_after_wait(b: &mut CircuitBreaker, now: &mut Instant) -> Duration {
        let wait = b.admit(*now).expect_err("the circuit is open");
        assert!(
            b.admit(*now + wait - Duration::from_millis(1)).is_err(),
            "no probe before the wait is over"
        );
        *now += wait;
        assert!(b.admit(*now).is_ok(), "the probe goes after {wait:?}");
        wait
    }

    #[test]
    fn the_wait_starts_at_the_probe_interval_and_doubles_per_failed_probe_up_to_open_duration() {
        let mut now = Instant::now();
        let mut b = growing();
        b.failure(now);
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(probe_after_wait(&mut b, &mut now));
            b.failure(now);
        }
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(
            waits,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(10_000),
                ms(10_000),
                ms(10_000)
            ]
        );
    }

    #[test]
    fn a_success_resets_the_wait_to_the_probe_interval() {
        let mut now = Instant::now();
        let mut b = growing();
        b.failure(now);
        probe_after_wait(&mut b, &mut now);
        b.failure(now);
        assert_eq!(probe_after_wait(&mut b, &mut now), Duration::from_secs(1));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        // The next outage starts over from the short wait.
        now += Duration::from_secs(30);
        b.failure(now);
        assert_eq!(
            probe_after_wait(&mut b, &mut now),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn without_a_probe_interval_every_wait_is_open_duration() {
        let mut now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(now);
        }
        for _ in 0..3 {
            assert_eq!(probe_after_wait(&mut b, &mut now), Duration::from_secs(10));
            b.failure(now);
        }
    }
}
