//! `jobctl completions SHELL`: prints the shell completion script for jobctl, generated
//! from the same clap definitions that parse the command line (no daemon involved).

use super::{Cli, Error, Outcome};
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::{self, Write};

/// Writes the completion script for `shell` to stdout.
pub fn run(shell: Shell) -> Result<Outcome, Error> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "jobctl", &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            what: "cannot write to stdout".into(),
            source,
        })?;
    Ok(Outcome::Success)
}
