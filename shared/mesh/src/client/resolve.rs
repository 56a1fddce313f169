//! Where the addresses of a peer's replicas come from: the system resolver (a headless
//! Kubernetes service resolves to one address per pod), or a fixed set changed at run time.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Where the addresses of a peer's replicas come from.
pub trait Resolve: Send + Sync + 'static {
    /// The current addresses.
    fn resolve(
        &self,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + '_>>;
}

/// Resolution of `host:port` through the system resolver (DNS; `/etc/hosts`).
#[derive(Debug, Clone)]
pub struct Dns {
    host: String,
    port: u16,
}

impl Dns {
    /// Resolves `host` and serves on `port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl Resolve for Dns {
    fn resolve(
        &self,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + '_>> {
        Box::pin(async move {
            let mut addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((self.host.as_str(), self.port))
                    .await?
                    .collect();
            addrs.sort();
            addrs.dedup();
            Ok(addrs)
        })
    }
}

/// A fixed set of addresses that can be changed at run time (tests, static peers).
#[derive(Debug, Clone, Default)]
pub struct StaticAddrs(Arc<Mutex<Vec<SocketAddr>>>);

impl StaticAddrs {
    /// Starts with `addrs`.
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self(Arc::new(Mutex::new(addrs)))
    }

    /// Replaces the addresses; the next resolution sees them.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = addrs;
    }
}

impl Resolve for StaticAddrs {
    fn resolve(
        &self,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + '_>> {
        let addrs = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

/// Addresses by peer, for a process that knows its peers statically (`tickmesh up`).
pub type StaticPeers = std::collections::HashMap<String, StaticAddrs>;
