//! `jobd-http`: the original service's REST API, served on top of the daemon's
//! socket, plus routes for job status, live progress, controls and submits, a
//! dashboard ([`ui`]), Prometheus metrics, and bearer-token auth ([`auth`]).
//!
//! It is a client of the daemon like `jobctl`: every job it submits belongs to the
//! user it runs as. Legacy routes (`/uploadCSV`, `/createBulkTeam`, `/exportData`,
//! `/updateTask`) answer byte for byte as the old Go/Gin service did; the read
//! routes are described in `docs/openapi.yaml`. One file per concept: the router
//! and start-up here, [`serve`] for connections, [`fast_path`] for `GET
//! /updateTask` without the framework, one file per legacy route, [`jobs`] and
//! [`sse`] for the read routes, [`control`] and [`submit`] for the JSON controls
//! and submits, [`events`] for every job's changes, [`metrics`] for `/metrics`,
//! [`guard`] and [`auth`] for who may do what, [`pool`] for the daemon
//! connections, [`cache`] for ids known never to exist, [`multipart`] for
//! streaming uploads, [`log`] for request logging.

pub mod auth;
mod cache;
mod control;
mod events;
mod export;
mod fallback;
mod fast_path;
mod guard;
mod jobs;
pub mod log;
mod metrics;
mod multipart;
mod pool;
mod query;
mod reply;
mod rewind;
mod serve;
mod sse;
mod submit;
mod ui;
mod update_task;
mod upload;

pub use pool::Pool;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use clap::Parser;
use jobd_protocol::JobInfo;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How long in-flight requests may take to finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long the start-up ping may take (a frozen daemon must not stop the start).
const STARTUP_PROBE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Parser)]
#[command(
    name = "jobd-http",
    version,
    about = "Serve jobd's legacy REST API, job routes, a dashboard (/ui/) and metrics over HTTP",
    after_help = "Without --token-file anyone who can reach the address acts as jobd-http's \
                  user, so jobd-http listens only on loopback addresses unless \
                  --insecure-listen is given."
)]
pub struct Config {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
    pub listen: String,
    /// Socket of the daemon [default: $XDG_RUNTIME_DIR/jobd/jobd.sock, /run/jobd/jobd.sock for root]
    #[arg(long, env = "JOBD_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Rate (units per second) of jobs submitted through the legacy routes when the
    /// request sets none (`?rate=N`); 1 reproduces the original's pace
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    pub default_rate: Option<f64>,
    /// Daemon connections used at once for short requests (and kept open)
    #[arg(long, default_value_t = 32, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub pool_size: u16,
    /// Always ask the daemon, even about ids it already said can never exist
    #[arg(long)]
    pub no_negative_cache: bool,
    /// Threads serving requests [default: the number of CPUs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    /// Requests logged one by one per second; past it, one summary line per second
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub log_budget: u32,
    /// Client connections served at once; more wait to be accepted
    #[arg(long, default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Seconds a client connection may wait for a request head (after connecting
    /// or after its last answer) before it is closed
    #[arg(long, default_value_t = 300, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// File of bearer tokens, one a line (mode 0600): every route but /healthz then
    /// needs `Authorization: Bearer TOKEN` (the dashboard: its login form)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Listen on a non-loopback address without --token-file: anyone who can
    /// reach it can then submit and control jobd-http's user's jobs
    #[arg(long)]
    pub insecure_listen: bool,
    /// A host name browsers may use to reach jobd-http without --token-file,
    /// besides loopback names (e.g. the name a local reverse proxy passes on);
    /// may be repeated
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of units per second"
        )),
    }
}

/// What every handler shares.
pub struct App {
    pub pool: Arc<Pool>,
    pub default_rate: Option<f64>,
    /// Ids known never to exist (see [`cache`]); `None` with `--no-negative-cache`.
    pub missing: Option<Arc<cache::MissingIds>>,
    /// Turns `true` when the server shuts down (ends event streams).
    pub shutdown: watch::Receiver<bool>,
    /// The tokens, with `--token-file`.
    pub auth: Option<Arc<auth::Auth>>,
    /// Serve browsers only on loopback host names (no tokens, no
    /// `--insecure-listen`), and those of `--allow-host`.
    pub loopback_only: bool,
    pub allowed_hosts: Vec<String>,
    /// Every job's changes, for `/events`.
    pub hub: Arc<events::Hub>,
}

pub type Shared = Arc<App>;

/// A `rate` query parameter that is not a number.
#[derive(Debug)]
struct BadRate;

impl BadRate {
    fn response(&self) -> Response {
        reply::error(StatusCode::BAD_REQUEST, "invalid_rate")
    }
}

impl App {
    /// The rate for a submit: `?rate=N`, else `--default-rate`. A `rate` that is
    /// not a number is an error (400 `invalid_rate`); the daemon checks the range.
    fn rate(&self, uri: &Uri) -> Result<Option<f64>, BadRate> {
        match query::first(uri.query(), "rate") {
            Some(r) if !r.trim().is_empty() => {
                r.trim().parse::<f64>().map(Some).map_err(|_| BadRate)
            }
            _ => Ok(self.default_rate),
        }
    }
}

/// `200 {"Job ID":"<id>"}`.
fn job_created(info: &JobInfo) -> Response {
    reply::json(StatusCode::OK, reply::one_field("Job ID", &info.id))
}

/// A GET route that answers 404 (not 405) to other methods, HEAD included.
fn get_only<H, T>(handler: H) -> MethodRouter<Shared>
where
    H: Handler<T, Shared>,
    T: 'static,
{
    get(handler)
        .head(fallback::wrong_method)
        .fallback(fallback::wrong_method)
}

/// A POST route that answers 404 (not 405) to other methods.
fn post_only<H, T>(handler: H) -> MethodRouter<Shared>
where
    H: Handler<T, Shared>,
    T: 'static,
{
    post(handler).fallback(fallback::wrong_method)
}

/// Every route; [`fallback::ROUTES`] lists the same ones for the trailing-slash
/// redirects.
pub fn router(app: Shared, stats: &'static log::Stats) -> Router {
    Router::new()
        .route(
            "/uploadCSV",
            post_only(upload::upload_csv).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/createBulkTeam",
            post_only(upload::create_bulk_team).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/exportData",
            post_only(export::export_data).layer(DefaultBodyLimit::max(export::MAX_BODY)),
        )
        .route("/updateTask", get_only(update_task::update_task))
        .route("/jobs/{id}", get_only(jobs::get))
        .route("/jobs/{id}/events", get_only(sse::events))
        .route("/jobs/{id}/output", get_only(jobs::output))
        .route("/jobs/{id}/errors", get_only(jobs::errors))
        .route("/healthz", get_only(jobs::healthz))
        .route(
            "/jobs",
            get(jobs::list)
                .post(submit::submit)
                .layer(DefaultBodyLimit::disable())
                .head(fallback::wrong_method)
                .fallback(fallback::wrong_method),
        )
        .route("/jobs/{id}/stop", post_only(control::stop))
        .route("/jobs/{id}/start", post_only(control::start))
        .route("/jobs/{id}/terminate", post_only(control::terminate))
        .route("/jobs/{id}/revert", post_only(control::revert))
        .route("/events", get_only(events::events))
        .route("/metrics", get_only(metrics::metrics))
        .route("/ui", get_only(ui::to_list))
        .route("/ui/", get_only(ui::list))
        .route("/ui/rows", get_only(ui::rows))
        .route("/ui/jobs/{id}", get_only(ui::job))
        .route("/ui/assets/{name}", get_only(ui::asset))
        .route(
            "/ui/login",
            post_only(ui::login).layer(DefaultBodyLimit::max(4096)),
        )
        .route("/ui/logout", post_only(ui::logout))
        .fallback(fallback::fallback)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            guard::guard,
        ))
        .with_state(app)
        .layer(log::LogLayer(stats))
}

/// Runs the server until SIGINT or SIGTERM, then lets in-flight requests finish
/// (for at most [`SHUTDOWN_GRACE`]).
pub async fn run(config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // Signals first: one arriving during start-up must not kill the process.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let socket = config
        .socket
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(jobd_protocol::paths::default_socket_path);
    let auth = match &config.token_file {
        Some(path) => Some(Arc::new(auth::Auth::load(path)?)),
        None => None,
    };
    if auth.is_none() && !config.insecure_listen {
        refuse_open_listen(&config.listen).await?;
    }
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("listening address")?;

    let pool = Arc::new(Pool::new(socket, usize::from(config.pool_size)));
    match tokio::time::timeout(STARTUP_PROBE, pool.ping()).await {
        Ok(Ok(())) => tracing::info!(socket = %pool.socket().display(), "the daemon answers"),
        Ok(Err(e)) => tracing::warn!(
            socket = %pool.socket().display(),
            error = %e,
            "the daemon does not answer yet; answering 503 until it does"
        ),
        Err(_) => tracing::warn!(
            socket = %pool.socket().display(),
            "the daemon did not answer a ping within {STARTUP_PROBE:?}"
        ),
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stats = log::Stats::new(config.log_budget);
    tokio::spawn(log::summarize(stats, shutdown_rx.clone()));
    let missing = (!config.no_negative_cache).then(cache::MissingIds::new);
    if let Some(m) = &missing {
        m.start(pool.socket().to_path_buf(), shutdown_rx.clone())
            .await;
    }
    let hub = events::Hub::new(Arc::clone(&pool), shutdown_rx.clone());
    let app = Arc::new(App {
        pool,
        default_rate: config.default_rate,
        missing,
        shutdown: shutdown_rx.clone(),
        loopback_only: auth.is_none() && !config.insecure_listen,
        allowed_hosts: config.allow_host.clone(),
        auth,
        hub,
    });
    tracing::info!(
        listen = %addr,
        auth = if app.auth.is_some() { "tokens" } else { "none" },
        "jobd-http listening"
    );

    raise_open_file_limit();
    let limits = serve::Limits {
        connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
        idle: Duration::from_secs(config.idle_timeout),
    };
    let server = serve::serve(
        listener,
        Arc::clone(&app),
        router(app, stats),
        stats,
        limits,
    );
    tokio::pin!(server);
    let which = tokio::select! {
        () = &mut server => return Ok(()),
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!("{which} received: finishing in-flight requests");
    let _ = shutdown_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; exiting");
    }
    tracing::info!("jobd-http stopped");
    Ok(())
}

/// Without tokens, anyone who reaches the address acts as our user: refuse an
/// address that is not loopback (`--insecure-listen` overrides).
async fn refuse_open_listen(listen: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("cannot resolve {listen}"))?
        .collect();
    if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        anyhow::bail!(
            "refusing to listen on {open} ({listen}) without --token-file: anyone who can \
             reach it could submit, stop and terminate jobs as this user. Give \
             --token-file FILE, or --insecure-listen if something in front of jobd-http \
             checks who calls"
        );
    }
    Ok(())
}

/// One descriptor per client connection: take the hard limit, so that
/// `--max-connections` is what bounds them.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags() {
        Config::command().debug_assert();
        let c = Config::try_parse_from(["jobd-http"]).expect("parses");
        assert_eq!(c.listen, "127.0.0.1:8081");
        assert_eq!(c.default_rate, None);
        let c = Config::try_parse_from(["jobd-http", "--default-rate", "1", "--socket", "/s"])
            .expect("parses");
        assert_eq!(c.default_rate, Some(1.0));
        assert_eq!(c.socket, Some(PathBuf::from("/s")));
        for bad in ["0", "-1", "x", "inf"] {
            assert!(Config::try_parse_from(["jobd-http", "--default-rate", bad]).is_err());
        }
    }

    /// The router serves exactly the routes `fallback::ROUTES` lists (on which the
    /// trailing-slash redirects rely), and nothing else.
    #[tokio::test]
    async fn router_matches_the_route_table() {
        use axum::body::Body;
        use axum::http::{Method, Request};
        use tower::ServiceExt;

        let (_tx, rx) = watch::channel(false);
        let pool = Arc::new(Pool::new(PathBuf::from("/nonexistent/jobd.sock"), 2));
        let app = Arc::new(App {
            hub: events::Hub::new(Arc::clone(&pool), rx.clone()),
            pool,
            default_rate: None,
            missing: None,
            shutdown: rx,
            auth: None,
            loopback_only: true,
            allowed_hosts: Vec::new(),
        });
        let router = router(app, log::Stats::new(0));
        let call = |method: Method, path: String| {
            let router = router.clone();
            async move {
                let req = Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .expect("request");
                router.oneshot(req).await.expect("infallible")
            }
        };
        let is_plain_404 = |r: &Response| {
            r.status() == StatusCode::NOT_FOUND
                && r.headers().get("content-type").map(|v| v.as_bytes()) == Some(b"text/plain")
        };
        for (method, pattern) in fallback::ROUTES {
            let path = pattern.replace("{id}", "x");
            let path = if path.starts_with("/ui/assets/") {
                ui::script_path().to_string()
            } else {
                path
            };
            let r = call(method.clone(), path.clone()).await;
            assert!(!is_plain_404(&r), "{method} {path} is not routed");
            for other in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::HEAD,
            ] {
                let served = fallback::ROUTES
                    .iter()
                    .any(|(m, p)| *m == other && p == pattern);
                if !served {
                    let r = call(other.clone(), path.clone()).await;
                    assert!(is_plain_404(&r), "{other} {path}: {}", r.status());
                }
            }
        }
        let r = call(Method::GET, "/jobs/x/nope".into()).await;
        assert!(is_plain_404(&r));
    }
}
