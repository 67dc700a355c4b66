//! `GET /events`: every change of every job, as Server-Sent Events, for the
//! dashboard's live updates.
//!
//! One daemon subscription (`Request::Events`) feeds every browser: the [`Hub`]
//! holds it while at least one client listens, and re-subscribes by itself when
//! the daemon goes away and comes back. The daemon pushes changes as they happen
//! (no polling on either side). Events:
//!
//! - `hello` first, `{"daemon":"up"|"down"|"connecting"}` (`connecting`: this
//!   is the first listener, and the hub is subscribing now);
//! - `job`: a job as `GET /jobs/{id}` shows it, at each change (new jobs too);
//! - `daemon`: `{"up":false}` when the daemon went away, `{"up":true}` when it is
//!   back (changes may have been missed meanwhile: read the jobs again);
//! - `resync`: changes were missed (a slow client); read the jobs again.
//!
//! A comment every 15 s keeps idle connections open; the stream ends when the
//! shim shuts down.

use super::pool::{log_refusal, Pool};
use super::Shared;
use crate::jobctl::render::job_json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use jobd_protocol::{Client, ClientError, JobInfo};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Changes kept for a browser that has not read them yet; further behind it is
/// told to read the jobs again.
const BACKLOG: usize = 1024;
/// First and longest wait between two attempts to reach the daemon.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_millis(1000);
/// How often a subscription with no listener left is noticed (and dropped).
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// How soon a browser reconnects after the stream broke.
const BROWSER_RETRY: Duration = Duration::from_millis(1000);

/// The hub's daemon subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Up,
    Down,
}

impl Link {
    fn as_str(self) -> &'static str {
        match self {
            Link::Connecting => "connecting",
            Link::Up => "up",
            Link::Down => "down",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Signal {
    Job(Arc<JobInfo>),
    Up,
    Down,
    Resync,
}

pub struct Hub {
    pool: Arc<Pool>,
    tx: broadcast::Sender<Signal>,
    /// Whether the daemon subscription is live.
    link: watch::Sender<Link>,
    /// Whether the task holding the subscription runs; changed only with this
    /// lock held, together with a look at the number of listeners.
    running: Mutex<bool>,
    shutdown: watch::Receiver<bool>,
}

impl Hub {
    pub fn new(pool: Arc<Pool>, shutdown: watch::Receiver<bool>) -> Arc<Hub> {
        Arc::new(Hub {
            pool,
            tx: broadcast::channel(BACKLOG).0,
            link: watch::channel(Link::Connecting).0,
            running: Mutex::new(false),
            shutdown,
        })
    }

    /// Every signal from now on, and the daemon subscription now.
    pub fn subscribe(self: &Arc<Self>) -> (broadcast::Receiver<Signal>, Link) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        if !*running {
            *running = true;
            tokio::spawn(Arc::clone(self).run());
        }
        (rx, *self.link.borrow())
    }

    /// Ends (under the lock) once nobody listens.
    fn nobody_listens(&self) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if self.tx.receiver_count() == 0 {
            *running = false;
            self.link.send_replace(Link::Connecting);
            true
        } else {
            false
        }
    }

    async fn run(self: Arc<Self>) {
        let mut retry = RETRY_FIRST;
        let mut shutdown = self.shutdown.clone();
        loop {
            if self.nobody_listens() || *shutdown.borrow() {
                return;
            }
            match self.follow().await {
                Ok(()) => retry = RETRY_FIRST,
                Err(e) => {
                    tracing::debug!(error = %e, "events: the daemon is not reachable");
                    if self.link.send_replace(Link::Down) != Link::Down {
                        let _ = self.tx.send(Signal::Down);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        _ = shutdown.wait_for(|down| *down) => return,
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Holds one daemon subscription until it breaks (`Err`), ends because we
    /// fell behind, or nobody listens any more (`Ok`).
    async fn follow(&self) -> Result<(), ClientError> {
        let mut client = Client::connect(self.pool.socket(), super::pool::CLIENT_NAME)
            .await
            .inspect_err(log_refusal)?;
        client.events().await?;
        self.link.send_replace(Link::Up);
        // Up again, or first up: listeners read the jobs again.
        let _ = self.tx.send(Signal::Up);
        let mut shutdown = self.shutdown.clone();
        let mut idle = tokio::time::interval(IDLE_CHECK);
        loop {
            tokio::select! {
                change = client.next_change() => match change? {
                    Ok(info) => {
                        let _ = self.tx.send(Signal::Job(Arc::new(info)));
                    }
                    Err(missed) => {
                        tracing::debug!(missed, "events: behind the daemon; subscribing again");
                        let _ = self.tx.send(Signal::Resync);
                        return Ok(());
                    }
                },
                _ = idle.tick() => if self.tx.receiver_count() == 0 {
                    return Ok(());
                },
                _ = shutdown.wait_for(|down| *down) => return Ok(()),
            }
        }
    }
}

pub async fn events(State(app): State<Shared>) -> Response {
    let (rx, link) = app.hub.subscribe();
    let hello = format!("{{\"daemon\":\"{}\"}}", link.as_str());
    let state = Listener {
        rx,
        first: Some(
            Event::default()
                .event("hello")
                .retry(BROWSER_RETRY)
                .data(hello),
        ),
        shutdown: app.shutdown.clone(),
    };
    Sse::new(stream::unfold(state, Listener::next))
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Listener {
    rx: broadcast::Receiver<Signal>,
    first: Option<Event>,
    shutdown: watch::Receiver<bool>,
}

impl Listener {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Listener)> {
        if let Some(first) = self.first.take() {
            return Some((Ok(first), self));
        }
        let signal = tokio::select! {
            s = self.rx.recv() => s,
            _ = self.shutdown.wait_for(|down| *down) => return None,
        };
        let event = match signal {
            Ok(Signal::Job(info)) => Event::default()
                .event("job")
                .data(job_json(&info).to_string()),
            Ok(Signal::Up) => Event::default().event("daemon").data("{\"up\":true}"),
            Ok(Signal::Down) => Event::default().event("daemon").data("{\"up\":false}"),
            Ok(Signal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("resync").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), self))
    }
}
