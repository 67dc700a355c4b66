//! jobd: the daemon. Data flows one way:
//! socket → `server` → `handler` → `registry` → `worker` → `kinds` → `store`.

pub mod config;
pub mod connection;
pub mod daemon;
pub mod dates;
pub mod feed;
pub mod handler;
pub mod kinds;
pub mod logging;
pub mod metrics;
pub mod pidfile;
pub mod registry;
pub mod rowcount;
pub mod scheduler;
pub mod server;
pub mod shutdown;
pub mod statelock;
pub mod store;
pub mod systemd;
pub mod trim;
pub mod users;
pub mod worker;
