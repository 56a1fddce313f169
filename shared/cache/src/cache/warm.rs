//! Warming: loading a set of keys through the cache, a few at a time, with progress.

use std::sync::Arc;

use futures_util::StreamExt;
use tracing::debug;

use crate::error::CacheError;
use crate::key;

use super::Cache;

/// Keys loaded at once by `warm`.
const WARM_CONCURRENCY: usize = 16;

/// What a warm-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmReport {
    /// Keys asked for.
    pub total: u64,
    /// Keys now cached (loaded, or cached already).
    pub loaded: u64,
    /// Keys the source does not have.
    pub missing: u64,
    /// Keys whose load failed.
    pub failed: u64,
}

impl Cache {
    /// Loads `keys` (empty: the loader's warm set) through the cache, reporting
    /// `progress(done, total)` after each key.
    pub async fn warm(
        &self,
        namespace: &str,
        keys: Vec<String>,
        mut progress: impl FnMut(u64, u64) + Send,
    ) -> Result<WarmReport, CacheError> {
        let ns = self.inner.namespace(namespace)?;
        let loader = ns
            .loader()
            .ok_or_else(|| CacheError::NoLoader(namespace.to_owned()))?;
        let keys = if keys.is_empty() {
            loader.warm_keys().await.map_err(|err| CacheError::Load {
                namespace: namespace.to_owned(),
                key: "(warm set)".to_owned(),
                source: Arc::from(err),
            })?
        } else {
            keys
        };
        for key in &keys {
            key::validate_key(key)?;
        }
        let mut report = WarmReport {
            total: keys.len() as u64,
            ..WarmReport::default()
        };
        progress(0, report.total);
        let mut results = futures_util::stream::iter(keys)
            .map(|key| async move { self.get_or_load(namespace, &key).await })
            .buffer_unordered(WARM_CONCURRENCY);
        let mut done = 0;
        while let Some(result) = results.next().await {
            match result {
                Ok(Some(_)) => report.loaded += 1,
                Ok(None) => report.missing += 1,
                Err(err) => {
                    debug!(namespace, error = %err, "warming a key failed");
                    report.failed += 1;
                }
            }
            done += 1;
            progress(done, report.total);
        }
        Ok(report)
    }
}
