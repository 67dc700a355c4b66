//! `jobd`: resolve the configuration, prepare everything that can fail, detach if
//! asked (before any runtime exists), then serve.

use clap::Parser;
use jobd::config::{Cli, Config};
use jobd::{daemon, logging, pidfile};
use std::os::unix::fs::DirBuilderExt;
use std::process::ExitCode;

fn main() -> ExitCode {
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
    match run(&cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobd: {e:#}");
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli, config: Config) -> anyhow::Result<()> {
    if !cli.daemon {
        let log = logging::to_stderr(&config.log_level);
        return serve(daemon::prepare(config)?, log);
    }
    let pid_file = config.pid_file.clone();
    pidfile::check_not_running(&pid_file).map_err(anyhow::Error::msg)?;
    for dir in [Some(config.log_dir.as_path()), pid_file.parent()]
        .into_iter()
        .flatten()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let (level, log_dir) = (config.log_level.clone(), config.log_dir.clone());
    let prepared = daemon::prepare(config)?;
    daemonize::Daemonize::new()
        .pid_file(&pid_file)
        .working_directory("/")
        .umask(0o027)
        .start()
        .map_err(|e| anyhow::anyhow!("cannot daemonize: {e}"))?;
    let log = logging::to_file(&level, &log_dir);
    let result = serve(prepared, log);
    pidfile::remove(&pid_file);
    result
}

fn serve(prepared: daemon::Prepared, log: logging::LogHandle) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(prepared, log))
}
