//! Accepting connections and serving each: by [`fast_path`] first, then, if it
//! hands the connection over, by hyper with the router.
//!
//! Shutdown is graceful, as `axum::serve` made it: once `App::shutdown` turns
//! true no connection is accepted; each one finishes the request in hand and
//! closes; [`serve`] returns when the last has closed.

use super::fast_path::{self, Exit};
use super::log::Stats;
use super::rewind::Rewind;
use super::Shared;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Pause after an accept error that is not about one connection (such as
/// running out of file descriptors), as hyper and axum do.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

pub async fn serve(listener: TcpListener, app: Shared, router: Router, stats: &'static Stats) {
    let mut shutdown = app.shutdown.clone();
    // Each connection holds a receiver; `closed()` tells when all are gone.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = shutdown.wait_for(|down| *down) => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, router, open) = (Arc::clone(&app), router.clone(), open_rx.clone());
        tokio::spawn(async move {
            connection(stream, app, router, stats).await;
            drop(open);
        });
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
}

async fn connection(stream: TcpStream, app: Shared, router: Router, stats: &'static Stats) {
    let mut shutdown = app.shutdown.clone();
    let (stream, read) = match fast_path::serve(stream, &app, stats, shutdown.clone()).await {
        Exit::Closed => return,
        Exit::Handoff(stream, read) => (stream, read),
    };
    let io = TokioIo::new(Rewind::new(stream, read));
    let conn = http1::Builder::new().serve_connection(io, TowerToHyperService::new(router));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.wait_for(|down| *down) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}
