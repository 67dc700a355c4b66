//! A node: one jobd on a store it may share with others (PostgreSQL).

use serde::{Deserialize, Serialize};

/// A node as `Nodes` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `--node`, by default the host name.
    pub name: String,
    /// Unix milliseconds.
    pub started_at: u64,
    /// Milliseconds since the node's last heartbeat, as the store saw it.
    pub heartbeat_age_ms: u64,
    /// Jobs it runs now.
    pub running: u32,
    /// Its `--max-running`.
    pub max_running: u32,
    /// Whether it stopped cleanly (SIGTERM): its jobs went back to the queue.
    pub stopped: bool,
}
