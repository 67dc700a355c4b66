//! Accepting connections and serving each: by [`fast_path`] first, then, if it
//! hands the connection over, by hyper with the router.
//!
//! At most [`Limits::connections`] are served at once (more wait in the listen
//! backlog), and one that waits longer than [`Limits::idle`] for a request head
//! is closed, on either path.
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
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Pause after an accept error that is not about one connection (such as
/// running out of file descriptors), as hyper and axum do.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Bounds on client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Served at once.
    pub connections: usize,
    /// Longest wait for a request head, from the connection's start or its last
    /// answer.
    pub idle: Duration,
}

pub async fn serve(
    listener: TcpListener,
    app: Shared,
    router: Router,
    stats: &'static Stats,
    limits: Limits,
) {
    let mut shutdown = app.shutdown.clone();
    let slots = Arc::new(Semaphore::new(limits.connections));
    // Each connection holds a receiver; `closed()` tells when all are gone.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|down| *down) => break,
        };
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
            connection(stream, app, router, stats, limits.idle).await;
            drop((slot, open));
        });
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
}

async fn connection(
    stream: TcpStream,
    app: Shared,
    router: Router,
    stats: &'static Stats,
    idle: Duration,
) {
    let mut shutdown = app.shutdown.clone();
    let (stream, read) = match fast_path::serve(stream, &app, stats, idle, shutdown.clone()).await {
        Exit::Closed => return,
        Exit::Handoff(stream, read) => (stream, read),
    };
    let io = TokioIo::new(Rewind::new(stream, read));
    // hyper's head timeout also runs while a kept-alive connection waits.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .serve_connection(io, TowerToHyperService::new(router));
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
