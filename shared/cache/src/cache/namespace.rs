//! The namespaces a cache knows: append-only slots read without locking on the hit path.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::error::CacheError;
use crate::l1::{KeyRef, Slot};
use crate::loader::SharedLoader;
use crate::settings::Policy;
use crate::stats::NsCounters;

use super::Inner;

/// One namespace: its policy, loader and counters.
pub(super) struct Namespace {
    /// A full word: ids are copied into lookup keys on the hit path, and a 4-byte id copied as
    /// part of an 8-byte word stalls store forwarding.
    pub(super) id: u64,
    pub(super) name: String,
    /// Changes with the configuration; the L1 hit path never reads it (an entry carries what
    /// it needs from the policy it was written under).
    pub(super) policy: RwLock<Policy>,
    pub(super) segment: usize,
    pub(super) loader: RwLock<Option<SharedLoader>>,
    pub(super) counters: Arc<NsCounters>,
    /// Bumped by every write and invalidation; a fill that raced one does not enter L1.
    pub(super) epoch: AtomicU64,
    /// Keys with a refresh-ahead reload running.
    pub(super) refreshing: Mutex<HashSet<String>>,
}

impl Namespace {
    pub(super) fn loader(&self) -> Option<SharedLoader> {
        self.loader
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    #[inline]
    pub(super) fn key_ref<'a>(&self, key: &'a str) -> KeyRef<'a> {
        KeyRef { ns: self.id, key }
    }

    /// The policy now (a configuration change replaces it).
    pub(super) fn policy(&self) -> Policy {
        *self.policy.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    #[inline]
    pub(super) fn slot<'a>(&'a self, key: &'a str) -> Slot<'a> {
        let policy = self.policy();
        Slot {
            segment: self.segment,
            ns: self.id,
            key,
            counters: &self.counters,
            tti: policy.tti,
            refresh_fraction: policy.refresh_ahead_fraction,
        }
    }

    pub(super) fn refreshing(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.refreshing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Most namespaces one cache knows (configured plus registered).
pub const MAX_NAMESPACES: usize = 256;

/// The namespaces: append-only slots, so a lookup neither locks nor clones; a name index for
/// when there are many.
pub(super) struct Namespaces {
    slots: Box<[OnceLock<Arc<Namespace>>]>,
    len: AtomicUsize,
    by_name: RwLock<HashMap<String, usize>>,
    adding: Mutex<()>,
}

impl Namespaces {
    pub(super) fn new() -> Self {
        Self {
            slots: (0..MAX_NAMESPACES).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
            by_name: RwLock::new(HashMap::new()),
            adding: Mutex::new(()),
        }
    }

    #[inline]
    pub(super) fn all(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.slots[..self.len.load(Ordering::Acquire)]
            .iter()
            .filter_map(OnceLock::get)
    }

    #[inline]
    pub(super) fn find(&self, name: &str) -> Option<&Arc<Namespace>> {
        let len = self.len.load(Ordering::Acquire);
        // A handful of namespaces: comparing names beats hashing one.
        if len <= 16 {
            return self.all().find(|ns| ns.name == name);
        }
        let i = *self
            .by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)?;
        self.slots.get(i)?.get()
    }
}

impl Inner {
    /// The namespace of that name, created with `policy` if it does not exist yet.
    pub(super) fn add_namespace(
        &self,
        name: &str,
        policy: Policy,
        loader: Option<SharedLoader>,
    ) -> Result<&Arc<Namespace>, CacheError> {
        let namespaces = &self.namespaces;
        let _adding = namespaces.adding.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ns) = namespaces.find(name) {
            return Ok(ns);
        }
        let id = namespaces.len.load(Ordering::Acquire);
        let slot = namespaces
            .slots
            .get(id)
            .ok_or(CacheError::TooManyNamespaces(MAX_NAMESPACES))?;
        let ns = Arc::new(Namespace {
            id: id as u64,
            name: name.to_owned(),
            policy: RwLock::new(policy),
            segment: self
                .l1
                .as_ref()
                .map_or(0, |l1| l1.segment_of(policy.eviction)),
            loader: RwLock::new(loader),
            counters: Arc::default(),
            epoch: AtomicU64::new(0),
            refreshing: Mutex::new(HashSet::new()),
        });
        let _ = slot.set(ns);
        namespaces
            .by_name
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), id);
        namespaces.len.store(id + 1, Ordering::Release);
        slot.get()
            .ok_or(CacheError::TooManyNamespaces(MAX_NAMESPACES))
    }

    #[inline]
    pub(super) fn find_namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.find(name)
    }

    #[inline]
    pub(super) fn namespace(&self, name: &str) -> Result<&Arc<Namespace>, CacheError> {
        self.find_namespace(name)
            .ok_or_else(|| CacheError::UnknownNamespace(name.to_owned()))
    }
}
