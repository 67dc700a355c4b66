//! Clients of the jobd daemon: `jobctl`, the command-line client (see [`jobctl`]),
//! and `jobd-http`, the HTTP shim serving the legacy REST API (see [`http`]).

pub mod http;
pub mod jobctl;
pub mod prom;
