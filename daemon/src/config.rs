//! Command-line configuration and the directories derived from it.

use clap::Parser;
use jobd_protocol::frame::{DEFAULT_MAX_FRAME, HARD_MAX_FRAME};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "jobd",
    version,
    about = "Runs long background jobs that can be stopped, started and terminated at any moment"
)]
pub struct Config {
    /// Socket to listen on [default: /run/jobd/jobd.sock for root, else $XDG_RUNTIME_DIR/jobd/jobd.sock]
    #[arg(long, env = "JOBD_SOCKET")]
    pub socket: Option<PathBuf>,

    /// Directory for the store, spool and export files [default: /var/lib/jobd for root, else $XDG_STATE_HOME/jobd]
    #[arg(long, env = "JOBD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Jobs running at once [default: the number of CPUs]
    #[arg(long)]
    pub max_running: Option<usize>,

    /// A job fails once it has more row errors than this
    #[arg(long, default_value_t = 100_000)]
    pub max_row_errors: u64,

    /// Largest frame accepted, in bytes
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME, value_parser = clap::value_parser!(u32).range(1024..=HARD_MAX_FRAME as i64))]
    pub max_frame: u32,

    /// Largest upload accepted, in bytes
    #[arg(long, default_value_t = u64::MAX)]
    pub max_upload_bytes: u64,

    /// Seconds a connection may stay silent before it is dropped
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
}

impl Config {
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(jobd_protocol::paths::default_socket_path)
    }

    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/jobd");
        }
        let state_home = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/jobd-{}", nix::unistd::geteuid())));
        state_home.join("jobd")
    }

    pub fn max_running(&self) -> usize {
        self.max_running
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(2)
            .max(1)
    }
}
