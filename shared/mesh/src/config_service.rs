//! The running configuration of a process, shared by its services and served by
//! `tickmesh.v1.ConfigService`.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use tickmesh_config::{ConfigError, LoadedConfig, PerformanceOptimizationConfig};
use tickmesh_proto::v1::config_service_server::{ConfigService, ConfigServiceServer};
use tickmesh_proto::v1::{
    GetConfigRequest, GetConfigResponse, UpdateConfigRequest, UpdateConfigResponse,
    WatchConfigRequest, WatchConfigResponse,
};
use tokio::sync::watch;
use tokio_stream::{Stream, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use crate::Shutdown;

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
        tickmesh_config::validate(&config)?;
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

    /// The tonic service serving this configuration; its watch streams end on `shutdown`.
    pub fn service(&self, shutdown: &Shutdown) -> ConfigServiceServer<ConfigApi> {
        ConfigServiceServer::new(ConfigApi {
            handle: self.clone(),
            shutdown: shutdown.clone(),
        })
    }
}

/// `tickmesh.v1.ConfigService` over a [`ConfigHandle`].
#[derive(Debug, Clone)]
pub struct ConfigApi {
    handle: ConfigHandle,
    shutdown: Shutdown,
}

type WatchStreamOf = Pin<Box<dyn Stream<Item = Result<WatchConfigResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    async fn get_config(
        &self,
        _request: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        let snapshot = self.handle.current();
        Ok(Response::new(GetConfigResponse {
            config: Some(tickmesh_config::redacted(&snapshot.config)),
            version: snapshot.version,
            source: snapshot.source,
        }))
    }

    async fn update_config(
        &self,
        request: Request<UpdateConfigRequest>,
    ) -> Result<Response<UpdateConfigResponse>, Status> {
        // The admin scope is checked by the auth layer (the contract declares it).
        let request = request.into_inner();
        let Some(update) = request.config else {
            return Err(Status::invalid_argument(
                "config: the new values are missing",
            ));
        };
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let current = self.handle.current();
        if request.expected_version != 0 && request.expected_version != current.version {
            return Err(Status::aborted(format!(
                "the configuration is at version {}, not {}; read it again and retry",
                current.version, request.expected_version
            )));
        }
        let next =
            tickmesh_config::apply_update(&current.config, &update, &paths).map_err(|e| {
                tracing::warn!(error = %e, "configuration update rejected; the running one stays");
                Status::invalid_argument(format!("{e}; the running configuration stays"))
            })?;
        let snapshot = self.handle.replace(next, "update").map_err(|e| {
            Status::invalid_argument(format!("{e}; the running configuration stays"))
        })?;
        tracing::info!(version = snapshot.version, fields = ?paths, "configuration updated");
        Ok(Response::new(UpdateConfigResponse {
            config: Some(tickmesh_config::redacted(&snapshot.config)),
            version: snapshot.version,
        }))
    }

    type WatchConfigStream = WatchStreamOf;

    async fn watch_config(
        &self,
        _request: Request<WatchConfigRequest>,
    ) -> Result<Response<Self::WatchConfigStream>, Status> {
        let shutdown = self.shutdown.clone();
        // Streams end cleanly on shutdown, so they never hold up draining.
        let ended = async move { shutdown.wait().await };
        let stream = WatchStream::new(self.handle.subscribe())
            .take_until(ended)
            .map(|snapshot| {
                Ok(WatchConfigResponse {
                    config: Some(tickmesh_config::redacted(&snapshot.config)),
                    version: snapshot.version,
                    source: snapshot.source,
                })
            });
        Ok(Response::new(Box::pin(stream)))
    }
}
