//! Start-up and shutdown of the whole daemon. Everything that can fail — config,
//! directories, the state directory's lock, the store, the socket, the pid file —
//! happens in `prepare`, before any fork and before the runtime exists, so the user
//! sees the error and a non-zero exit. `run` then serves until a signal, lets
//! workers checkpoint, and cleans up.

use crate::config::Config;
use crate::handler::Context;
use crate::logging::LogHandle;
use crate::registry::{Limits, Registry};
use crate::server::{self, ServerConfig};
use crate::statelock::StateLock;
use crate::store;
use crate::systemd;
use anyhow::Context as _;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct Prepared {
    /// Held until `run` returns: no other daemon may open this state directory.
    lock: StateLock,
    config: Config,
    store: store::Prepared,
    listener: UnixListener,
    /// The socket came from systemd: it is systemd's to remove.
    activated: bool,
}

pub fn prepare(config: Config) -> anyhow::Result<Prepared> {
    raise_open_file_limit();
    let state = &config.state_dir;
    make_private_dir(state)?;
    // Before the store is opened: a second daemon must not touch it at all.
    let lock = StateLock::acquire(state)?;
    let store = store::prepare(&config.store, state).with_context(|| match &config.store {
        store::StoreUrl::Sqlite => format!("cannot open the store in {}", state.display()),
        url => format!("cannot use the store {url}"),
    })?;
    let (listener, activated) = match systemd::activated_listener() {
        Some(l) => (l, true),
        None => {
            let group = match &config.socket_group {
                Some(name) => Some(
                    nix::unistd::Group::from_name(name)
                        .ok()
                        .flatten()
                        .with_context(|| format!("no such group: {name}"))?
                        .gid,
                ),
                None => None,
            };
            let l = server::bind(&config.socket, group)
                .with_context(|| format!("cannot listen on {}", config.socket.display()))?;
            (l, false)
        }
    };
    Ok(Prepared {
        lock,
        config,
        store,
        listener,
        activated,
    })
}

impl Prepared {
    /// In the launcher after the fork of daemon mode: what was prepared belongs to
    /// the daemon now, and this process exits without closing any of it. Unlocking
    /// would release the daemon's state lock (they share the open file). Closing the
    /// store would checkpoint and delete the WAL the daemon writes to: SQLite's
    /// fcntl locks are not inherited across a fork, so here it believes itself the
    /// last user, and every commit of the daemon would then go to a deleted file.
    pub fn leave_to_daemon(self) {
        std::mem::forget(self);
    }

    /// In the daemon after the fork of daemon mode: the inherited state lock is now
    /// this process's (its pid goes into the lock file).
    pub fn adopt_after_fork(&mut self) {
        if let Err(e) = self.lock.adopt() {
            tracing::warn!(error = %e, file = %self.lock.path().display(), "cannot record the pid in the lock file");
        }
    }
}

/// One descriptor per client connection and per running job: take the hard limit.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Runs until SIGINT/SIGTERM; returns once every worker has checkpointed.
pub async fn run(
    prepared: Prepared,
    log: LogHandle,
    on_ready: Box<dyn FnOnce() + Send>,
) -> anyhow::Result<()> {
    let Prepared {
        lock,
        config,
        store,
        listener,
        activated,
    } = prepared;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let shutdown = crate::shutdown::on_signals().context("cannot install signal handlers")?;
    reload_on_sighup(config.clone(), log)?;
    let limits = Limits {
        max_running: config.max_running,
        max_row_errors: config.max_row_errors,
        node: config.node.clone(),
    };
    let node = store::NodeSettings {
        name: config.node.clone(),
        max_running: config.max_running,
        lease: Duration::from_secs(config.lease_secs),
    };
    let registry = tokio::task::spawn_blocking(move || {
        let store = store.open(node)?;
        Registry::load(store, limits)
    })
    .await
    .context("loading the jobs panicked")?
    .context("cannot load the jobs")?;
    registry.start();
    if let Some(keep) = config.retention() {
        registry.start_retention(keep);
    }
    tokio::spawn(Arc::clone(registry.activity()).trim_when_quiet(Arc::clone(registry.store())));
    let socket = match listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
    {
        Some(p) => p,
        None => config.socket.clone(),
    };
    tracing::info!(
        socket = %socket.display(),
        state_dir = %config.state_dir.display(),
        node = %config.node,
        activated,
        "jobd ready"
    );
    systemd::notify("READY=1");
    on_ready();

    let ctx = Arc::new(Context {
        registry: Arc::clone(&registry),
        max_upload_bytes: config.max_upload_bytes.unwrap_or(u64::MAX),
    });
    let cfg = Arc::new(ServerConfig {
        max_frame: config.max_frame,
        idle_timeout: Duration::from_secs(config.idle_timeout),
    });
    server::run(listener, ctx, cfg, shutdown).await;

    systemd::notify("STOPPING=1");
    // Stop accepting first (the listener is gone), then let workers checkpoint.
    if !activated {
        let _ = std::fs::remove_file(&config.socket);
    }
    registry.shutdown().await;
    tracing::info!("all workers checkpointed; bye");
    drop(lock);
    Ok(())
}

/// SIGHUP re-reads the config file and applies its log level; other settings take
/// effect at the next start.
fn reload_on_sighup(config: Config, log: LogHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let level = match crate::config::read_file(config.config_file.as_deref()) {
                Ok((_, file)) => file.log_level.unwrap_or_else(|| config.log_level.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: config file not reloaded");
                    continue;
                }
            };
            match log.set_level(&level) {
                Ok(()) => tracing::info!(level, "SIGHUP: log level reloaded"),
                Err(e) => tracing::warn!(error = %e, "SIGHUP: invalid log level"),
            }
        }
    });
    Ok(())
}
