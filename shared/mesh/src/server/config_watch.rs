//! Hot reload of the configuration file. Kubernetes updates a mounted ConfigMap by swapping a
//! symlink, which file-change notifications often miss, so the file is read again every second
//! and compared (a small file: a plain read does not hold up the async worker): a changed, valid file becomes the running configuration; an invalid one is
//! logged and the running configuration stays.

use std::path::PathBuf;
use std::time::Duration;

use tracing::{info, warn};

use crate::{ConfigHandle, Shutdown};

/// Watches `path` until `shutdown`.
pub fn spawn(
    path: PathBuf,
    handle: ConfigHandle,
    shutdown: &Shutdown,
) -> tokio::task::JoinHandle<()> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut last = std::fs::read(&path).ok();
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let Ok(now) = std::fs::read(&path) else {
                continue; // mid-swap or gone: keep the running configuration
            };
            if last.as_ref() == Some(&now) {
                continue;
            }
            last = Some(now);
            match tickmesh_config::load(Some(&path), std::env::vars()) {
                Ok(loaded) => match handle.replace(loaded.config, loaded.source) {
                    Ok(snapshot) => {
                        info!(path = %path.display(), version = snapshot.version, "configuration reloaded");
                    }
                    Err(e) => {
                        warn!(error = %e, "reloaded configuration rejected; the running one stays")
                    }
                },
                Err(e) => {
                    warn!(error = %e, "reloaded configuration rejected; the running one stays")
                }
            }
        }
    })
}
