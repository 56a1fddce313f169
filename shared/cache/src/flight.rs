//! Single-flight in the process: concurrent misses of one key share one load.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::cache::Hit;
use crate::error::CacheError;

pub(crate) type Outcome = Result<Option<Hit>, CacheError>;

type Slot = Arc<OnceCell<Outcome>>;

/// Loads in flight by (namespace id, key).
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<(u64, Box<str>), Slot>>,
}

impl Flights {
    /// Runs `leader` unless a load of the key is already running, in which case this waits for
    /// that one and shares its outcome. If the running leader is cancelled, a waiter takes over.
    pub async fn run<F, Fut>(&self, ns: u64, key: &str, leader: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let id = (ns, Box::<str>::from(key));
        let slot = Arc::clone(self.lock().entry(id.clone()).or_default());
        let outcome = slot.get_or_init(leader).await.clone();
        let mut map = self.lock();
        if map.get(&id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            map.remove(&id);
        }
        outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, Box<str>), Slot>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
