//! Shutdown signalling: SIGINT or SIGTERM fires a broadcast that every loop can await.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

/// A handle that resolves once shutdown has begun.
pub struct Shutdown {
    rx: broadcast::Receiver<()>,
    fired: bool,
}

impl Shutdown {
    pub async fn recv(&mut self) {
        if !self.fired {
            let _ = self.rx.recv().await;
            self.fired = true;
        }
    }
}

/// Installs the signal handlers and returns the trigger's receiver side.
pub fn on_signals() -> std::io::Result<Shutdown> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = broadcast::channel(1);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = tx.send(());
    });
    Ok(Shutdown { rx, fired: false })
}
