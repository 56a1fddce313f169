//! The running configuration of a process: one [`ConfigHandle`] shared by its services, each
//! change a new [`ConfigSnapshot`] that every subscriber sees.

use std::sync::Arc;

use tokio::sync::watch;

use crate::{ConfigError, LoadedConfig, PerformanceOptimizationConfig};

/// One version of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSnapshot {
    /// The configuration, validated.
    pub config: Arc<PerformanceOptimizationConfig>,
    /// 1 for the configuration the process started with, +1 per accepted change.
    pub version: u64,
    /// Where it came from.
    pub source: String,
}

impl ConfigSnapshot {
    /// Largest gRPC message in bytes (`server.max_message_bytes`).
    pub fn message_limit(&self) -> usize {
        self.config
            .server
            .map_or(4 * 1024 * 1024, |s| s.max_message_bytes as usize)
    }
}

/// Shared handle on the running configuration; every clone sees every change.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    tx: Arc<watch::Sender<ConfigSnapshot>>,
}

impl ConfigHandle {
    /// A handle starting at `loaded`, version 1.
    pub fn new(loaded: LoadedConfig) -> Self {
        let (tx, _) = watch::channel(ConfigSnapshot {
            config: Arc::new(loaded.config),
            version: 1,
            source: loaded.source,
        });
        Self { tx: Arc::new(tx) }
    }

    /// The current version.
    pub fn current(&self) -> ConfigSnapshot {
        self.tx.borrow().clone()
    }

    /// The current version number (cheap: no copy of the configuration).
    pub fn version(&self) -> u64 {
        self.tx.borrow().version
    }

    /// A receiver that sees every later change.
    pub fn subscribe(&self) -> watch::Receiver<ConfigSnapshot> {
        self.tx.subscribe()
    }

    /// Validates `config` and makes it current; an invalid one leaves the running one in place.
    pub fn replace(
        &self,
        config: PerformanceOptimizationConfig,
        source: impl Into<String>,
    ) -> Result<ConfigSnapshot, ConfigError> {
        crate::validate(&config)?;
        let source = source.into();
        let mut next = None;
        self.tx.send_modify(|current| {
            current.config = Arc::new(config);
            current.version += 1;
            current.source = source;
            next = Some(current.clone());
        });
        Ok(next.expect("send_modify runs the closure"))
    }
}
