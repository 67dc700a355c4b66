//! `jobd-http`: parse the flags, set up logging, run the server on a multi-thread
//! runtime. Everything else lives in `jobd_cli::http`.

use clap::Parser;
use jobd_cli::http::{self, Config};
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    http::log::init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jobd-http: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(http::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobd-http: {e:#}");
            ExitCode::from(1)
        }
    }
}
