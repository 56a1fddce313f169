//! The computation pool: a named rayon pool for CPU-bound work, bridged to tokio so that no
//! async worker ever blocks. A caller that goes away cancels the work it started.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::Status;

/// A rayon pool whose threads are named `tickmesh-compute-<n>`.
#[derive(Clone)]
pub struct ComputePool {
    pool: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for ComputePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputePool")
            .field("threads", &self.pool.current_num_threads())
            .finish()
    }
}

/// Set when the caller is gone; work checks it between items and stops early.
#[derive(Debug, Clone, Default)]
pub struct Cancelled(Arc<AtomicBool>);

impl Cancelled {
    /// Whether the caller went away.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sets the flag when dropped: the future awaiting the work was dropped (the call was cancelled)
/// or the work finished, either way nothing more is needed.
struct CancelOnDrop(Cancelled);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.0.store(true, Ordering::Relaxed);
    }
}

impl ComputePool {
    /// A pool of `threads` threads (0: one per core).
    pub fn new(threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tickmesh-compute-{i}"))
            .build()?;
        Ok(Self {
            pool: Arc::new(pool),
        })
    }

    /// Runs `work` on the pool and awaits its result without blocking the async worker.
    /// Dropping the returned future sets the [`Cancelled`] flag `work` receives.
    pub async fn run<T, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Cancelled) -> T + Send + 'static,
    {
        let cancelled = Cancelled::default();
        let guard = CancelOnDrop(cancelled.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pool = self.pool.clone();
        self.pool.spawn(move || {
            let result = pool.install(|| work(&cancelled));
            let _ = tx.send(result);
        });
        let result = rx
            .await
            .map_err(|_| Status::internal("a computation panicked"));
        drop(guard);
        result
    }

    /// Runs `work` inside the pool (for rayon parallel iterators), blocking the calling thread:
    /// only for threads that are not async workers (benchmarks, tests).
    pub fn install<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        self.pool.install(work)
    }
}
