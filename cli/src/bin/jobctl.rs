//! `jobctl`: parse the command line, run the command on a current-thread runtime,
//! map the result to an exit code. Everything else lives in `jobd_cli::jobctl`.

use clap::Parser;
use jobd_cli::jobctl::{self, Cli};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jobctl: cannot start the async runtime: {e}");
            return ExitCode::from(jobctl::EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(jobctl::run(cli));
    // A blocking read of an interactive stdin must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(jobctl::exit_code(&result))
}
