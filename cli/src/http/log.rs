//! Request logging without the flood: one line per request (method, path,
//! status, time to the response head) at `info`, up to a budget of lines per
//! second; past it, requests are only counted, and one summary line per second
//! tells how many there were, by status class, with their mean and longest times.
//! Lines go to stderr through `tracing`; `RUST_LOG` filters them as usual.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Sets up `tracing` to stderr; `RUST_LOG` overrides the default `info`.
pub fn init() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}

/// Counters shared by every request; reset once a second by [`summarize`].
pub struct Stats {
    budget: u32,
    /// Lines written this second.
    logged: AtomicU32,
    /// Requests this second: all, then by class 1xx..5xx.
    requests: AtomicU64,
    classes: [AtomicU64; 5],
    total_us: AtomicU64,
    max_us: AtomicU64,
}

impl Stats {
    pub fn new(budget: u32) -> Arc<Stats> {
        Arc::new(Stats {
            budget,
            logged: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            classes: Default::default(),
            total_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        })
    }

    fn record(&self, method: &str, path: &str, status: StatusCode, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.requests.fetch_add(1, Relaxed);
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Relaxed);
        self.total_us.fetch_add(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
        if self.logged.fetch_add(1, Relaxed) < self.budget {
            tracing::info!(
                target: "jobd_http::request",
                "{method} {path} {} {:.3}ms",
                status.as_u16(),
                us as f64 / 1000.0
            );
        }
    }

    /// Takes this second's counts; a summary line if some requests were not
    /// logged one by one.
    fn roll(&self) {
        let logged = self.logged.swap(0, Relaxed);
        let requests = self.requests.swap(0, Relaxed);
        let classes: Vec<u64> = self.classes.iter().map(|c| c.swap(0, Relaxed)).collect();
        let total_us = self.total_us.swap(0, Relaxed);
        let max_us = self.max_us.swap(0, Relaxed);
        if logged <= self.budget || requests == 0 {
            return;
        }
        let skipped = u64::from(logged - self.budget);
        tracing::info!(
            target: "jobd_http::request",
            "{requests} requests in the last second ({skipped} not logged one by one): \
             2xx={} 3xx={} 4xx={} 5xx={} mean={:.3}ms max={:.3}ms",
            classes[1],
            classes[2],
            classes[3],
            classes[4],
            total_us as f64 / requests as f64 / 1000.0,
            max_us as f64 / 1000.0
        );
    }
}

/// The middleware: times each request and records it.
pub async fn middleware(State(stats): State<Arc<Stats>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = next.run(req).await;
    stats.record(method.as_str(), uri.path(), resp.status(), start.elapsed());
    resp
}

/// Rolls the counters over every second until shutdown.
pub async fn summarize(stats: Arc<Stats>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => stats.roll(),
            _ = shutdown.wait_for(|down| *down) => {
                stats.roll();
                return;
            }
        }
    }
}
