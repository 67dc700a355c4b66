//! Configuration: flags and environment, then the config file, then defaults —
//! the first that sets a value wins. `jobd --check-config` prints the result.

use crate::store::StoreUrl;
use clap::Parser;
use jobd_protocol::frame::{DEFAULT_MAX_FRAME, HARD_MAX_FRAME};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Parser)]
#[command(
    name = "jobd",
    version,
    about = "Runs long background jobs that can be stopped, started and terminated at any moment",
    after_help = "Precedence: flags and environment, then the config file, then the defaults."
)]
pub struct Cli {
    /// Config file (TOML) [default: /etc/jobd/jobd.toml for root, else $XDG_CONFIG_HOME/jobd/jobd.toml; a missing default file is fine]
    #[arg(long, env = "JOBD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Socket to listen on [default: /run/jobd/jobd.sock for root, else $XDG_RUNTIME_DIR/jobd/jobd.sock]
    #[arg(long, env = "JOBD_SOCKET")]
    pub socket: Option<PathBuf>,

    /// Directory for the store, spool and export files [default: /var/lib/jobd for root, else $XDG_STATE_HOME/jobd]
    #[arg(long, env = "JOBD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Where jobs live: `sqlite` (a database in the state directory) or a PostgreSQL URL, postgres://USER@HOST:PORT/DB (`?host=/run/postgresql` for a socket directory) [default: sqlite]
    #[arg(long, env = "JOBD_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// Directory for log files in daemon mode [default: /var/log/jobd for root, else <state dir>/log]
    #[arg(long, env = "JOBD_LOG_DIR")]
    pub log_dir: Option<PathBuf>,

    /// Pid file in daemon mode [default: /run/jobd/jobd.pid for root, else next to the socket]
    #[arg(long)]
    pub pid_file: Option<PathBuf>,

    /// Group allowed to use the socket (the socket directory becomes 0750, the socket 0660)
    #[arg(long)]
    pub socket_group: Option<String>,

    /// Jobs running at once [default: the number of CPUs]
    #[arg(long)]
    pub max_running: Option<usize>,

    /// This node's name among those sharing a PostgreSQL store: letters, digits, `.`, `_`, `-` [default: the host name]
    #[arg(long, env = "JOBD_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// Seconds a node's claim on a running job lasts unless renewed; another node takes the job over once it runs out [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub lease_secs: Option<u64>,

    /// A job fails once it has more row errors than this [default: 100000]
    #[arg(long)]
    pub max_row_errors: Option<u64>,

    /// Largest frame accepted, in bytes [default: 8388608]
    #[arg(long)]
    pub max_frame: Option<u32>,

    /// Largest upload accepted, in bytes [default: no limit]
    #[arg(long)]
    pub max_upload_bytes: Option<u64>,

    /// Seconds a connection may stay silent before it is dropped [default: 300]
    #[arg(long)]
    pub idle_timeout: Option<u64>,

    /// Forget finished jobs (status, row errors, files; not their effects) once they ended this long ago: 30d, 12h, 90m, 0s [default: keep forever]
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<String>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info]
    #[arg(long, env = "JOBD_LOG")]
    pub log_level: Option<String>,

    /// Detach from the terminal, write a pid file and log to the log directory
    #[arg(long)]
    pub daemon: bool,

    /// Validate the configuration, print it and exit
    #[arg(long)]
    pub check_config: bool,
}

/// The config file: every key optional, unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub log_dir: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub max_running: Option<usize>,
    pub node: Option<String>,
    pub lease_secs: Option<u64>,
    pub max_row_errors: Option<u64>,
    pub max_frame: Option<u32>,
    pub max_upload_bytes: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub retention: Option<String>,
    pub log_level: Option<String>,
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file that was read, if any.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Shown with any password masked.
    pub store: StoreUrl,
    pub log_dir: PathBuf,
    pub pid_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    pub max_running: usize,
    pub node: String,
    pub lease_secs: u64,
    pub max_row_errors: u64,
    pub max_frame: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes: Option<u64>,
    pub idle_timeout: u64,
    /// How long finished jobs are kept, as written (`30d`); absent: for ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    pub log_level: String,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A directory systemd made for the service (`StateDirectory=` and friends).
fn systemd_dir(var: &str) -> Option<PathBuf> {
    let v = std::env::var(var).ok()?;
    v.split(':')
        .next()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

fn default_config_file() -> Option<PathBuf> {
    if let Some(d) = systemd_dir("CONFIGURATION_DIRECTORY") {
        return Some(d.join("jobd.toml"));
    }
    if is_root() {
        return Some(PathBuf::from("/etc/jobd/jobd.toml"));
    }
    env_dir("XDG_CONFIG_HOME")
        .or_else(|| env_dir("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("jobd/jobd.toml"))
}

/// Reads the config file: an explicit one must exist, the default one may not.
pub fn read_file(cli_path: Option<&Path>) -> Result<(Option<PathBuf>, FileConfig), ConfigError> {
    let (path, required) = match cli_path {
        Some(p) => (p.to_path_buf(), true),
        None => match default_config_file() {
            Some(p) => (p, false),
            None => return Ok((None, FileConfig::default())),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, FileConfig::default()))
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let file = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok((Some(path), file))
}

/// The host name, as far as it makes a valid node name.
fn default_node_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let name: String = host
        .chars()
        .map(|c| if node_char(c) { c } else { '-' })
        .take(MAX_NODE_NAME)
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Node names appear in logs, tables and the database: short and plain.
const MAX_NODE_NAME: usize = 63;

fn node_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn check_node_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_NODE_NAME || !name.chars().all(node_char) {
        return Err(ConfigError::Invalid(format!(
            "node must be 1 to {MAX_NODE_NAME} letters, digits, '.', '_' or '-', not {name:?}"
        )));
    }
    Ok(())
}

impl Config {
    /// Flags and environment first, then the file, then the defaults.
    pub fn resolve(cli: &Cli) -> Result<Config, ConfigError> {
        let (config_file, file) = read_file(cli.config.as_deref())?;
        let root = is_root();
        let socket = cli
            .socket
            .clone()
            .or(file.socket)
            .or_else(|| systemd_dir("RUNTIME_DIRECTORY").map(|d| d.join("jobd.sock")))
            .unwrap_or_else(jobd_protocol::paths::default_socket_path);
        let state_dir = cli
            .state_dir
            .clone()
            .or(file.state_dir)
            .or_else(|| systemd_dir("STATE_DIRECTORY"))
            .unwrap_or_else(|| {
                if root {
                    PathBuf::from("/var/lib/jobd")
                } else {
                    env_dir("XDG_STATE_HOME")
                        .or_else(|| env_dir("HOME").map(|h| h.join(".local/state")))
                        .unwrap_or_else(|| {
                            PathBuf::from(format!("/tmp/jobd-{}-state", nix::unistd::geteuid()))
                        })
                        .join("jobd")
                }
            });
        let log_dir = cli
            .log_dir
            .clone()
            .or(file.log_dir)
            .or_else(|| systemd_dir("LOGS_DIRECTORY"))
            .unwrap_or_else(|| {
                if root {
                    PathBuf::from("/var/log/jobd")
                } else {
                    state_dir.join("log")
                }
            });
        let pid_file = cli.pid_file.clone().or(file.pid_file).unwrap_or_else(|| {
            if root {
                PathBuf::from("/run/jobd/jobd.pid")
            } else {
                socket.with_file_name("jobd.pid")
            }
        });
        let max_running = cli
            .max_running
            .or(file.max_running)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(2);
        let max_frame = cli
            .max_frame
            .or(file.max_frame)
            .unwrap_or(DEFAULT_MAX_FRAME);
        let store = cli
            .store
            .as_deref()
            .or(file.store.as_deref())
            .unwrap_or("sqlite");
        let store = StoreUrl::parse(store).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let config = Config {
            config_file,
            socket,
            state_dir,
            store,
            log_dir,
            pid_file,
            socket_group: cli.socket_group.clone().or(file.socket_group),
            max_running,
            node: cli
                .node
                .clone()
                .or(file.node)
                .unwrap_or_else(default_node_name),
            lease_secs: cli.lease_secs.or(file.lease_secs).unwrap_or(10),
            max_row_errors: cli
                .max_row_errors
                .or(file.max_row_errors)
                .unwrap_or(100_000),
            max_frame,
            max_upload_bytes: cli.max_upload_bytes.or(file.max_upload_bytes),
            idle_timeout: cli.idle_timeout.or(file.idle_timeout).unwrap_or(300),
            retention: cli
                .retention
                .clone()
                .or(file.retention)
                .map(|r| r.trim().to_string()),
            log_level: cli
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.max_running == 0 {
            return bad("max_running must be at least 1".into());
        }
        check_node_name(&self.node)?;
        if !(2..=3600).contains(&self.lease_secs) {
            return bad(format!(
                "lease_secs must be between 2 and 3600 seconds, not {}",
                self.lease_secs
            ));
        }
        if !(1024..=HARD_MAX_FRAME).contains(&self.max_frame) {
            return bad(format!(
                "max_frame must be between 1024 and {HARD_MAX_FRAME} bytes, not {}",
                self.max_frame
            ));
        }
        if self.idle_timeout == 0 {
            return bad("idle_timeout must be at least 1 second".into());
        }
        if self.max_upload_bytes == Some(0) {
            return bad("max_upload_bytes must be at least 1".into());
        }
        if let Some(r) = &self.retention {
            if let Err(e) = jobd_protocol::duration::parse(r) {
                return bad(format!("retention: {e}"));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return bad(format!(
                "log_level {:?} is not a valid filter",
                self.log_level
            ));
        }
        for (name, p) in [("socket", &self.socket), ("state_dir", &self.state_dir)] {
            if !p.is_absolute() {
                return bad(format!(
                    "{name} must be an absolute path, not {}",
                    p.display()
                ));
            }
        }
        Ok(())
    }

    /// How long finished jobs are kept; `None`: for ever.
    pub fn retention(&self) -> Option<std::time::Duration> {
        self.retention
            .as_deref()
            .and_then(|r| jobd_protocol::duration::parse(r).ok())
    }

    /// The effective configuration as TOML, for `--check-config`.
    pub fn to_toml(&self) -> String {
        let source = match &self.config_file {
            Some(p) => format!("# read from {}\n", p.display()),
            None => "# no config file read\n".to_string(),
        };
        source + &toml::to_string(self).unwrap_or_default()
    }
}
