//! Per-caller rate limits: one token bucket per API key holder, with the rate of
//! `rate_limits.callers.<name>` or `rate_limits.default_caller`. A call over the limit gets
//! RESOURCE_EXHAUSTED at once, with a `google.rpc.RetryInfo` detail saying when a token will be
//! there. Buckets follow configuration changes (a new version starts fresh buckets).
//! Hand-written: tower's `RateLimit` is one rate for a whole service and makes calls wait;
//! this one is per caller and refuses at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::{Either, Ready, ready};
use std::time::Instant;

use super::auth::Caller;
use crate::ConfigHandle;
use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;
use crate::status::Refusal;
use tickmesh_resilience::token_bucket::TokenBucket;

#[derive(Debug, Default)]
struct Buckets {
    version: u64,
    by_caller: HashMap<Arc<str>, TokenBucket>,
}

/// Limits each caller's call rate.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    config: ConfigHandle,
    buckets: Arc<Mutex<Buckets>>,
}

impl RateLimitLayer {
    /// Limits from the running configuration.
    pub fn new(config: &ConfigHandle) -> Self {
        Self {
            config: config.clone(),
            buckets: Arc::default(),
        }
    }

    /// Takes a token of `caller`'s bucket, or says how long to wait.
    fn admit(&self, caller: &Caller) -> Result<(), std::time::Duration> {
        let version = self.config.version();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.version != version {
            buckets.version = version;
            buckets.by_caller.clear();
        }
        if let Some(bucket) = buckets.by_caller.get_mut(&caller.name) {
            return bucket.try_take(1, Instant::now());
        }
        let bucket = buckets
            .by_caller
            .entry(caller.name.clone())
            .or_insert_with(|| {
                let snapshot = self.config.current();
                let limits = snapshot.config.rate_limits.clone().unwrap_or_default();
                limits
                    .callers
                    .get(&*caller.name)
                    .or(limits.default_caller.as_ref())
                    .map(TokenBucket::from_config)
                    .unwrap_or_else(|| TokenBucket::new(10_000.0, 20_000))
            });
        bucket.try_take(1, Instant::now())
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

impl<S: GrpcService<B>, B> OnCall<S, B> for RateLimitLayer {
    // No box of its own: the inner call, or the refusal.
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        if Entry::of(&request).open {
            return Either::Left(inner.call(request));
        }
        let admitted = match request.extensions().get::<Caller>() {
            Some(caller) => self
                .admit(caller)
                .map_err(|wait| (caller.name.clone(), wait)),
            None => {
                let caller = Caller::anonymous();
                self.admit(&caller).map_err(|wait| (caller.name, wait))
            }
        };
        match admitted {
            Ok(()) => Either::Left(inner.call(request)),
            Err((caller, retry_after)) => Either::Right(ready(Ok(Refusal::RateLimited {
                caller,
                retry_after,
            }
            .into_http()))),
        }
    }
}
