//! Logging: to stderr in the foreground (without timestamps under journald, which
//! adds its own), to a daily-rolling file in the log directory in daemon mode.
//! The filter can be changed at run time (SIGHUP re-reads it from the config file).

use std::path::Path;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// Changes the log filter of the running daemon.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// Keeps the file writer's thread alive until exit.
    _guard: Option<WorkerGuard>,
}

impl LogHandle {
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// Logs to stderr.
pub fn to_stderr(level: &str) -> LogHandle {
    let (filter, handle) = reload::Layer::new(filter_of(level));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    if under_journald {
        tracing_subscriber::registry()
            .with(filter)
            .with(layer.without_time())
            .init();
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init();
    }
    LogHandle {
        filter: handle,
        _guard: None,
    }
}

/// Logs to `<dir>/jobd.log.<date>`, rolled daily, appended to (never truncated).
/// Call after daemonizing: the writer runs on its own thread.
pub fn to_file(level: &str, dir: &Path) -> LogHandle {
    let (filter, handle) = reload::Layer::new(filter_of(level));
    let (writer, guard) =
        tracing_appender::non_blocking(tracing_appender::rolling::daily(dir, "jobd.log"));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(writer).with_ansi(false))
        .init();
    LogHandle {
        filter: handle,
        _guard: Some(guard),
    }
}

fn filter_of(level: &str) -> EnvFilter {
    EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
}
