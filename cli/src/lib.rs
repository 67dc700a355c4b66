//! Clients of the jobd daemon: `jobctl`, the command-line client (see [`jobctl`]).

pub mod jobctl;
