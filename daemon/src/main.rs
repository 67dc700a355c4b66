//! `jobd`: resolve the configuration, prepare everything that can fail, detach if
//! asked (before any runtime exists), then serve.

use clap::Parser;
use jobd::config::{Cli, Config};
use jobd::store::StoreError;
use jobd::{daemon, logging, pidfile};
use nix::sys::stat::{umask, Mode};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Everything jobd creates is private unless it says otherwise (the socket's group).
    umask(Mode::from_bits_truncate(0o077));
    jobd::trim::limit_arenas();
    let cli = Cli::parse();
    let config = match Config::resolve(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jobd: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let result = if cli.daemon {
        run_detached(config)
    } else {
        let log = logging::to_stderr(&config.log_level);
        daemon::prepare(config).and_then(|p| serve(p, log, Box::new(|| {})))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobd: {e:#}");
            if cli.daemon {
                // The detached daemon's stderr goes nowhere: its log has it.
                tracing::error!("{e:#}");
            }
            exit_code(&e)
        }
    }
}

/// 2 for a store that cannot be used as configured (the user's to fix, like a bad
/// flag), 1 for anything else.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<StoreError>() {
        Some(StoreError::Config(_)) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

/// Daemon mode. The launcher returns only once the daemon answers on its socket
/// (exit 0) or has failed (exit 1): the daemon reports readiness through a pipe.
fn run_detached(config: Config) -> anyhow::Result<()> {
    let pid_file = config.pid_file.clone();
    pidfile::check_not_running(&pid_file).map_err(anyhow::Error::msg)?;
    let (level, log_dir) = (config.log_level.clone(), config.log_dir.clone());
    // The socket's directory first: `prepare` gives it its mode and group. It also
    // locks the state directory, so that a busy one is reported here; the daemon
    // inherits the lock across the fork.
    let mut prepared = daemon::prepare(config)?;
    for dir in [Some(log_dir.as_path()), pid_file.parent()]
        .into_iter()
        .flatten()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let (ready_rx, ready_tx) = nix::unistd::pipe()?;
    let outcome = daemonize::Daemonize::new()
        .pid_file(&pid_file)
        .working_directory("/")
        .umask(0o077)
        .execute();
    match outcome {
        daemonize::Outcome::Parent(Ok(_)) => {
            prepared.leave_to_daemon();
            drop(ready_tx);
            let mut answer = [0u8; 1];
            let ready = File::from(ready_rx).read(&mut answer).unwrap_or(0) == 1;
            if ready {
                Ok(())
            } else {
                anyhow::bail!(
                    "the daemon did not start; see its log in {}",
                    log_dir.display()
                )
            }
        }
        daemonize::Outcome::Parent(Err(e)) => {
            prepared.leave_to_daemon();
            anyhow::bail!("cannot daemonize: {e}")
        }
        daemonize::Outcome::Child(Err(e)) => anyhow::bail!("cannot daemonize: {e}"),
        daemonize::Outcome::Child(Ok(_)) => {
            drop(ready_rx);
            prepared.adopt_after_fork();
            let log = logging::to_file(&level, &log_dir);
            let mut ready_tx = File::from(ready_tx);
            let result = serve(
                prepared,
                log,
                Box::new(move || {
                    let _ = ready_tx.write_all(b"1");
                }),
            );
            pidfile::remove(&pid_file);
            result
        }
    }
}

fn serve(
    prepared: daemon::Prepared,
    log: logging::LogHandle,
    on_ready: Box<dyn FnOnce() + Send>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(prepared, log, on_ready))
}
