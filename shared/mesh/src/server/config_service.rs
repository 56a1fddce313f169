//! `tickmesh.v1.ConfigService`: the running configuration of a process (a
//! [`tickmesh_config::ConfigHandle`]) read, changed and watched over gRPC.

use std::pin::Pin;

use futures_util::StreamExt;
use tickmesh_config::ConfigHandle;
use tickmesh_proto::v1::config_service_server::{ConfigService, ConfigServiceServer};
use tickmesh_proto::v1::{
    GetConfigRequest, GetConfigResponse, UpdateConfigRequest, UpdateConfigResponse,
    WatchConfigRequest, WatchConfigResponse,
};
use tokio_stream::{Stream, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use crate::Shutdown;

/// The tonic service serving `handle`'s configuration; its watch streams end on `shutdown`.
pub fn server(handle: &ConfigHandle, shutdown: &Shutdown) -> ConfigServiceServer<ConfigApi> {
    ConfigServiceServer::new(ConfigApi {
        handle: handle.clone(),
        shutdown: shutdown.clone(),
    })
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
