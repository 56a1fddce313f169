//! A token bucket: `rate` tokens per second up to `burst`; callers wait for tokens.

use std::time::{Duration, Instant};

use tickmesh_proto::v1::{PerformanceOptimizationConfig, TokenBucket as TokenBucketConfig};

/// A token bucket rate limit (not shared between tasks; wrap it in a mutex to share).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket with `rate` tokens per second and room for `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            refilled: Instant::now(),
        }
    }

    /// The bucket a config entry describes.
    pub fn from_config(config: &TokenBucketConfig) -> Self {
        Self::new(config.rate_per_second, config.burst)
    }

    /// The bucket of an outside data source: `rate_limits.sources.<name>`, else
    /// `rate_limits.default_source`.
    pub fn for_source(config: &PerformanceOptimizationConfig, source: &str) -> Self {
        let limits = config.rate_limits.clone().unwrap_or_default();
        limits
            .sources
            .get(source)
            .or(limits.default_source.as_ref())
            .map(Self::from_config)
            .unwrap_or_else(|| Self::new(50_000.0, 100_000))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
    }

    /// Takes `n` tokens if there are that many; otherwise says how long until there will be.
    /// Asking for more than `burst` waits for `burst` (a large batch goes through at the rate).
    pub fn try_take(&mut self, n: u32, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let n = f64::from(n).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            // A rate so small that the wait does not fit a Duration waits an hour at a time.
            Err(Duration::try_from_secs_f64((n - self.tokens) / self.rate)
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(3600)))
        }
    }

    /// Waits until `n` tokens are there and takes them.
    pub async fn take(&mut self, n: u32) {
        while let Err(wait) = self.try_take(n, Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_serves_its_burst_then_says_how_long_to_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5);
        bucket.refilled = start;
        assert!(bucket.try_take(5, start).is_ok());
        let wait = bucket.try_take(1, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // After the wait, exactly one token is there.
        assert!(bucket.try_take(1, start + wait).is_ok());
        assert!(bucket.try_take(1, start + wait).is_err());
    }

    #[test]
    fn tokens_never_pile_up_beyond_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000.0, 3);
        bucket.refilled = start;
        let later = start + Duration::from_secs(60);
        assert!(bucket.try_take(3, later).is_ok());
        assert!(bucket.try_take(1, later).is_err());
    }
}
