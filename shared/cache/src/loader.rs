//! The source behind the cache: one loader per namespace.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::error::BoxError;

/// Loads values of one namespace from the source (the store) on a miss.
///
/// Implementations return `Ok(None)` for a key the source does not have (it is not cached).
pub trait Loader: Send + Sync {
    /// The encoded value of `key`, if the source has it.
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, BoxError>>;

    /// The keys `warm` loads when it is given none (default: none).
    fn warm_keys(&self) -> BoxFuture<'_, Result<Vec<String>, BoxError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A [`Loader`] made from an async closure; see [`loader_fn`].
pub struct FnLoader<F> {
    load: F,
    warm: Vec<String>,
}

impl<F> FnLoader<F> {
    /// Sets the keys [`Loader::warm_keys`] returns.
    pub fn with_warm_keys(mut self, keys: Vec<String>) -> Self {
        self.warm = keys;
        self
    }
}

impl<F> fmt::Debug for FnLoader<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnLoader")
            .field("warm_keys", &self.warm.len())
            .finish_non_exhaustive()
    }
}

/// A loader from `|key: String| async move { ... }`.
pub fn loader_fn<F, Fut>(load: F) -> FnLoader<F>
where
    F: Fn(String) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Option<Bytes>, BoxError>> + Send + 'static,
{
    FnLoader {
        load,
        warm: Vec::new(),
    }
}

impl<F, Fut> Loader for FnLoader<F>
where
    F: Fn(String) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Option<Bytes>, BoxError>> + Send + 'static,
{
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, BoxError>> {
        Box::pin((self.load)(key.to_owned()))
    }

    fn warm_keys(&self) -> BoxFuture<'_, Result<Vec<String>, BoxError>> {
        let keys = self.warm.clone();
        Box::pin(async move { Ok(keys) })
    }
}

/// A shared loader, as [`crate::Cache::register_loader`] takes it.
pub type SharedLoader = Arc<dyn Loader>;
