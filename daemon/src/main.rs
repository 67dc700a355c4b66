//! `jobd`: parse flags, prepare everything that can fail, then serve.

use clap::Parser;
use jobd::config::Config;
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JOBD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let result = jobd::daemon::prepare(config).and_then(|prepared| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(jobd::daemon::run(prepared))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
