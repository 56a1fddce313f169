//! One shutdown signal shared by every service of a process.

use tokio::sync::watch;

/// A shutdown trigger that any number of tasks can wait on; cloning shares it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self {
            tx: std::sync::Arc::new(tx),
        }
    }

    /// Fires the signal; waiting tasks wake up. Firing twice is harmless.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the signal has fired (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in self, so this cannot fail while we wait.
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// Fires the signal on SIGTERM or SIGINT (Ctrl-C), from a background task.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown requested");
            this.trigger();
        });
        Ok(())
    }
}
