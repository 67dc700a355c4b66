//! Start-up and shutdown of the whole daemon: directories, store, registry, socket,
//! then serve until a signal, let workers checkpoint, remove the socket.

use crate::config::Config;
use crate::handler::Context;
use crate::kinds::Paths;
use crate::registry::{Limits, Registry};
use crate::server::{self, ServerConfig};
use crate::store::Store;
use anyhow::Context as _;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can fail before serving: done first, so errors reach the user.
pub struct Prepared {
    config: Config,
    registry_input: (Store, Paths),
}

pub fn prepare(config: Config) -> anyhow::Result<Prepared> {
    let state = config.state_dir();
    let paths = Paths {
        spool_dir: state.join("spool"),
        export_dir: state.join("exports"),
    };
    for dir in [&state, &paths.spool_dir, &paths.export_dir] {
        make_private_dir(dir)?;
    }
    let store = Store::open(&state.join("jobd.db"))
        .with_context(|| format!("cannot open the store in {}", state.display()))?;
    Ok(Prepared {
        config,
        registry_input: (store, paths),
    })
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Runs until SIGINT/SIGTERM; returns once every worker has checkpointed.
pub async fn run(prepared: Prepared) -> anyhow::Result<()> {
    let Prepared {
        config,
        registry_input: (store, paths),
    } = prepared;
    let socket = config.socket_path();
    let listener =
        server::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    let shutdown = crate::shutdown::on_signals().context("cannot install signal handlers")?;
    let limits = Limits {
        max_running: config.max_running(),
        max_row_errors: config.max_row_errors,
    };
    let registry = tokio::task::spawn_blocking(move || Registry::load(store, paths, limits))
        .await
        .context("loading the jobs panicked")?
        .context("cannot load the jobs")?;
    registry.start();
    tracing::info!(socket = %socket.display(), state_dir = %config.state_dir().display(), "jobd ready");

    let ctx = Arc::new(Context {
        registry: Arc::clone(&registry),
        max_upload_bytes: config.max_upload_bytes,
    });
    let cfg = Arc::new(ServerConfig {
        max_frame: config.max_frame,
        idle_timeout: Duration::from_secs(config.idle_timeout),
    });
    server::run(listener, ctx, cfg, shutdown).await;

    // Stop accepting first (the listener is gone), then let workers checkpoint.
    let _ = std::fs::remove_file(&socket);
    registry.shutdown().await;
    tracing::info!("all workers checkpointed; bye");
    Ok(())
}
