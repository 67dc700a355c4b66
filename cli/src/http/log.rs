//! Request logging without the flood: one line per request (method, path,
//! status, time to the response head) at `info`, up to a budget of lines per
//! second; past it, requests are only counted, and one summary line per second
//! tells how many there were, by status class, with their mean and longest times.
//! Lines go to stderr through `tracing`; `RUST_LOG` filters them as usual.

use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tower::{Layer, Service};

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
/// One per process, never freed: requests borrow it without touching a refcount.
pub struct Stats {
    budget: u32,
    /// Lines written this second.
    logged: AtomicU32,
    /// Requests this second by class 1xx..5xx.
    classes: [AtomicU64; 5],
    total_us: AtomicU64,
    max_us: AtomicU64,
}

impl Stats {
    pub fn new(budget: u32) -> &'static Stats {
        Box::leak(Box::new(Stats {
            budget,
            logged: AtomicU32::new(0),
            classes: Default::default(),
            total_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }))
    }

    /// Takes one of this second's line slots, if any is left. Past the budget
    /// this is a plain load: requests then share no written cache line but the
    /// counters'.
    pub fn take_line(&self) -> bool {
        self.logged.load(Relaxed) < self.budget && self.logged.fetch_add(1, Relaxed) < self.budget
    }

    /// Counts a request answered with `status` after `took`; writes its line
    /// (method, path) if it holds one of [`Stats::take_line`]'s slots.
    pub fn record(&self, status: StatusCode, took: Duration, line: Option<(&str, &str)>) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Relaxed);
        self.total_us.fetch_add(us, Relaxed);
        if us > self.max_us.load(Relaxed) {
            self.max_us.fetch_max(us, Relaxed);
        }
        if let Some((method, path)) = line {
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
        let logged = self.logged.swap(0, Relaxed).min(self.budget);
        let classes: Vec<u64> = self.classes.iter().map(|c| c.swap(0, Relaxed)).collect();
        let requests: u64 = classes.iter().sum();
        let total_us = self.total_us.swap(0, Relaxed);
        let max_us = self.max_us.swap(0, Relaxed);
        let skipped = requests.saturating_sub(u64::from(logged));
        if skipped == 0 {
            return;
        }
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

/// The logging layer: times each request and records it. A plain tower layer
/// (no boxed future, no refcount per request): `from_fn` cost a tenth of the
/// throughput of `GET /updateTask`.
#[derive(Clone, Copy)]
pub struct LogLayer(pub &'static Stats);

impl<S> Layer<S> for LogLayer {
    type Service = Logged<S>;
    fn layer(&self, inner: S) -> Logged<S> {
        Logged {
            inner,
            stats: self.0,
        }
    }
}

#[derive(Clone)]
pub struct Logged<S> {
    inner: S,
    stats: &'static Stats,
}

impl<S, B> Service<Request<B>> for Logged<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = LoggedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let line = self
            .stats
            .take_line()
            .then(|| (req.method().clone(), req.uri().clone()));
        LoggedFuture {
            inner: self.inner.call(req),
            stats: self.stats,
            start: Instant::now(),
            line,
        }
    }
}

pin_project! {
    pub struct LoggedFuture<F> {
        #[pin]
        inner: F,
        stats: &'static Stats,
        start: Instant,
        line: Option<(Method, Uri)>,
    }
}

impl<F, E> Future for LoggedFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Ok(resp) = &out {
            let line = this.line.as_ref().map(|(m, u)| (m.as_str(), u.path()));
            this.stats.record(resp.status(), this.start.elapsed(), line);
        }
        Poll::Ready(out)
    }
}

/// Rolls the counters over every second until shutdown.
pub async fn summarize(stats: &'static Stats, mut shutdown: watch::Receiver<bool>) {
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
