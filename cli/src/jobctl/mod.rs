//! `jobctl`, the command-line client of jobd: clap definitions, dispatch, and the
//! mapping from a command's result to an exit code. One file per command.
//!
//! Exit codes: 0 ok; 1 the daemon refused, a job did not complete, or a local I/O
//! error; 2 usage (clap's own code); 3 no daemon reachable, the process at the socket
//! not trusted (see `jobd_protocol::peer`), or the connection broke.

mod completions;
mod control;
mod errors;
mod export;
mod metrics;
mod nodes;
mod output;
mod ping;
mod progress;
mod prune;
pub mod render;
mod revert;
mod status;
mod upload;
mod wait;
mod watch;

use clap::{Args, Parser, Subcommand};
use jobd_protocol::{Client, ClientError, JobState, UploadKind};
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

pub const EXIT_OK: u8 = 0;
/// The daemon said no, a job did not complete, or a local I/O error.
pub const EXIT_FAILURE: u8 = 1;
/// Usage errors; clap exits with this code by itself.
pub const EXIT_USAGE: u8 = 2;
/// No daemon reachable at the socket, an untrusted process there, or the
/// connection broke.
pub const EXIT_UNAVAILABLE: u8 = 3;

/// Name sent in `Hello`.
const CLIENT_NAME: &str = concat!("jobctl/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Parser)]
#[command(
    name = "jobctl",
    args_override_self = true,
    version,
    about = "Control jobd, the background job daemon",
    after_help = "Exit codes: 0 ok, 1 the daemon refused or the job did not complete, \
                  2 usage error, 3 no daemon reachable (or not trusted).",
    after_long_help = EXAMPLES
)]
pub struct Cli {
    /// Socket of the daemon [default: $XDG_RUNTIME_DIR/jobd/jobd.sock, /run/jobd/jobd.sock for root]
    #[arg(long, global = true, env = "JOBD_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print machine-readable JSON
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only what scripts need (the job id for submits)
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The end of `jobctl --help`.
const EXAMPLES: &str = "\
Examples:
  jobctl upload data.csv --wait            upload a baseline CSV and wait for the end
  jobctl stop ID; jobctl start ID          pause a job, resume it at the next row
  jobctl terminate --dry-run ID            what a terminate would roll back now
  jobctl revert --dry-run ID               what undoing a finished import would remove
  jobctl revert ID                         undo it: its records or teams are gone (state reverted)
  jobctl prune --older-than 30d            forget your jobs that ended over 30 days ago
  jobctl prune --state failed,reverted     forget every failed or reverted job of yours
  jobd --retention 30d                     (the daemon) prune every user's jobs 30 days after they end

Exit codes: 0 ok, 1 the daemon refused or the job did not complete, 2 usage error,
3 no daemon reachable (or not trusted).";

/// Options of the commands that create a job.
#[derive(Debug, Clone, Args)]
pub struct SubmitOpts {
    /// Throttle the job to N units (rows or dates) per second; may be fractional
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Wait until the job ends; exit 0 only if it completed
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a baseline CSV file (or `-` for stdin) as a baselineCSV job
    Upload {
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
        #[command(flatten)]
        opts: SubmitOpts,
    },
    /// Upload a team CSV file (or `-` for stdin) as a bulkTeam job
    BulkTeam {
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
        #[command(flatten)]
        opts: SubmitOpts,
    },
    /// Export the baseline records between two dates (inclusive) as a createExport job
    Export {
        /// First date, YYYY-MM-DD
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: String,
        /// Last date, YYYY-MM-DD
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: String,
        #[command(flatten)]
        opts: SubmitOpts,
    },
    /// Pause a job (it finishes the unit in hand and commits)
    Stop { id: String },
    /// Resume a paused job
    Start { id: String },
    /// Stop a job and roll back everything it wrote
    Terminate {
        id: String,
        /// Change nothing; print what would be rolled back now (records by date range, teams, export bytes)
        #[arg(long)]
        dry_run: bool,
    },
    /// Undo every effect of a finished (completed or failed) upload or bulk-team job
    #[command(after_help = "\
One transaction removes the job's baseline records or teams (their names become free
again); the job's state becomes `reverted`, and it keeps its counts and row errors.
Exports already written are not rewritten. A job still queued, running or paused is
refused (job_not_finished: terminate it instead), as are exports and terminated jobs
(not_revertible) and a second revert (already_reverted).

Examples:
  jobctl revert --dry-run alice-baselineCSV-1795734327-2243
  jobctl revert alice-baselineCSV-1795734327-2243
  jobctl --json revert --dry-run ID        {\"records\": 1200, \"first_date\": ..., \"teams\": 0, ...}")]
    Revert {
        id: String,
        /// Change nothing; print what would be undone (records by date range, teams by name)
        #[arg(long)]
        dry_run: bool,
    },
    /// Forget finished jobs (yours; everyone's for root): status, row errors, files
    #[command(after_help = "\
Forgets completed, failed, terminated and reverted jobs that ended at least DURATION
ago: their status, row errors and any spool or export file go; their effects
(baseline records, teams) stay, and their ids are never handed out again (a pruned
id answers id_doesn't_exist). Jobs not finished are never touched. The daemon works
in small batches, so controls of running jobs are not held up.
`jobd --retention DURATION` (config key `retention`) does this by itself.

Examples:
  jobctl prune                             every finished job of yours
  jobctl prune --older-than 30d            those that ended over 30 days ago
  jobctl prune --older-than 12h --state failed,terminated
  jobctl -q prune --older-than 1w          print only the number pruned")]
    Prune {
        /// Only jobs that ended at least this long ago: 30d, 12h, 90m, 1w, 0s
        #[arg(long, value_name = "DURATION", value_parser = prune::parse_duration, default_value = "0s")]
        older_than: Duration,
        /// Only jobs in these final states (comma-separated) [default: all four]
        #[arg(long, value_name = "STATE,...", value_delimiter = ',', value_parser = prune::parse_state)]
        state: Vec<JobState>,
    },
    /// Apply an action to a job, as the original service's updateTask
    UpdateTask {
        #[arg(long)]
        id: String,
        /// stop, start or terminate
        #[arg(long)]
        action: String,
    },
    /// Show jobs (all of yours when no id is given)
    Status { ids: Vec<String> },
    /// Wait until the jobs end; exit 0 only if all completed
    Wait {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Follow a job's progress until it ends; exit 0 only if it completed
    Watch { id: String },
    /// Fetch the output file of a completed export
    Output {
        id: String,
        /// Write to FILE instead of stdout (`-` is stdout)
        #[arg(short, long, value_name = "FILE|-")]
        output: Option<PathBuf>,
    },
    /// Show the rows a job rejected
    Errors { id: String },
    /// Check that the daemon answers
    Ping,
    /// List the nodes sharing the daemon's store, with their heartbeat age and running jobs
    Nodes,
    /// Print the daemon's counters in the Prometheus text format (as jobd-http's /metrics)
    Metrics,
    /// Print the completion script for SHELL (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// How a command that ran to its end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A job ended in another state than `completed` (exit 1, states already shown).
    NotCompleted,
}

impl Outcome {
    fn all_completed<'a>(states: impl IntoIterator<Item = &'a JobState>) -> Outcome {
        if states.into_iter().all(|s| *s == JobState::Completed) {
            Outcome::Success
        } else {
            Outcome::NotCompleted
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// The daemon refused, could not be reached, or the connection broke.
    Client(ClientError),
    /// A local input could not be opened.
    Open { path: PathBuf, source: io::Error },
    /// Another local I/O error (writing stdout or an output file).
    Io { what: String, source: io::Error },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Client(e) => write!(f, "{e}"),
            Error::Open { path, source } => {
                write!(f, "cannot open {}: {source}", path.display())
            }
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Error {
        Error::Client(e)
    }
}

impl Error {
    fn is_broken_pipe(&self) -> bool {
        let io = match self {
            Error::Io { source, .. } => source,
            Error::Client(ClientError::Local(source)) => source,
            _ => return false,
        };
        io.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Reports an error on stderr (`jobctl: ...`) and gives the exit code of a result.
pub fn exit_code(result: &Result<Outcome, Error>) -> u8 {
    match result {
        Ok(Outcome::Success) => EXIT_OK,
        Ok(Outcome::NotCompleted) => EXIT_FAILURE,
        Err(e) => {
            // A reader that went away (`jobctl output ID | head`) needs no message.
            if !e.is_broken_pipe() {
                eprintln!("jobctl: {e}");
            }
            match e {
                Error::Client(c) if c.is_unavailable() => EXIT_UNAVAILABLE,
                _ => EXIT_FAILURE,
            }
        }
    }
}

/// What every command needs: where the daemon is and how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub socket: PathBuf,
    pub json: bool,
    pub quiet: bool,
}

impl Ctx {
    async fn connect(&self) -> Result<Client, Error> {
        Ok(Client::connect(&self.socket, CLIENT_NAME).await?)
    }
}

/// Writes one line on stdout; a failed write is an error, never a panic.
fn print_line(line: impl fmt::Display) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            what: "cannot write to stdout".into(),
            source,
        })
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<Outcome, Error> {
    let socket = cli
        .socket
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(jobd_protocol::paths::default_socket_path);
    let ctx = Ctx {
        socket,
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Upload { file, opts } => {
            upload::run(&ctx, UploadKind::BaselineCsv, &file, &opts).await
        }
        Command::BulkTeam { file, opts } => {
            upload::run(&ctx, UploadKind::BulkTeam, &file, &opts).await
        }
        Command::Export { from, to, opts } => export::run(&ctx, &from, &to, &opts).await,
        Command::Stop { id } => control::run(&ctx, &id, "stop").await,
        Command::Start { id } => control::run(&ctx, &id, "start").await,
        Command::Terminate { id, dry_run: false } => control::run(&ctx, &id, "terminate").await,
        Command::Terminate { id, dry_run: true } => control::terminate_dry_run(&ctx, &id).await,
        Command::Revert { id, dry_run } => revert::run(&ctx, &id, dry_run).await,
        Command::Prune { older_than, state } => prune::run(&ctx, older_than, &state).await,
        Command::UpdateTask { id, action } => control::run(&ctx, &id, &action).await,
        Command::Status { ids } => status::run(&ctx, &ids).await,
        Command::Wait { ids } => wait::run(&ctx, &ids).await,
        Command::Watch { id } => watch::run(&ctx, &id).await,
        Command::Output { id, output } => output::run(&ctx, &id, output.as_deref()).await,
        Command::Errors { id } => errors::run(&ctx, &id).await,
        Command::Ping => ping::run(&ctx).await,
        Command::Nodes => nodes::run(&ctx).await,
        Command::Metrics => metrics::run(&ctx).await,
        Command::Completions { shell } => completions::run(shell),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["jobctl", "--json", "-q", "status", "x"]);
        let b = Cli::try_parse_from(["jobctl", "status", "x", "--json", "-q"]);
        for cli in [a, b] {
            let cli = cli.expect("parses");
            assert!(cli.json && cli.quiet);
        }
        let c = Cli::try_parse_from(["jobctl", "ping", "--socket", "/tmp/s"]).expect("parses");
        assert_eq!(c.socket, Some(PathBuf::from("/tmp/s")));
    }

    #[test]
    fn submit_flags() {
        let cli = Cli::try_parse_from(["jobctl", "upload", "-", "--rate", "0.5", "--wait"])
            .expect("parses");
        match cli.command {
            Command::Upload { file, opts } => {
                assert_eq!(file, PathBuf::from("-"));
                assert_eq!(opts.rate, Some(0.5));
                assert!(opts.wait);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli =
            Cli::try_parse_from(["jobctl", "update-task", "--id", "a-b", "--action", "bogus"])
                .expect("parses");
        assert!(matches!(cli.command, Command::UpdateTask { .. }));
    }

    #[test]
    fn undo_and_prune_flags() {
        let cli = Cli::try_parse_from(["jobctl", "revert", "--dry-run", "x"]).expect("parses");
        assert!(matches!(cli.command, Command::Revert { dry_run: true, .. }));
        let cli = Cli::try_parse_from(["jobctl", "terminate", "x", "--dry-run"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Terminate { dry_run: true, .. }
        ));
        let cli = Cli::try_parse_from(["jobctl", "prune"]).expect("parses");
        match cli.command {
            Command::Prune { older_than, state } => {
                assert_eq!(older_than, Duration::ZERO);
                assert!(state.is_empty());
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "jobctl",
            "prune",
            "--older-than",
            "1d12h",
            "--state",
            "failed,reverted",
        ])
        .expect("parses");
        match cli.command {
            Command::Prune { older_than, state } => {
                assert_eq!(older_than, Duration::from_secs(36 * 3600));
                assert_eq!(state, [JobState::Failed, JobState::Reverted]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            vec!["jobctl"],
            vec!["jobctl", "wait"],
            vec!["jobctl", "export", "--from", "2020-01-01"],
            vec!["jobctl", "upload", "f", "--rate", "fast"],
            vec!["jobctl", "frobnicate"],
            vec!["jobctl", "revert"],
            vec!["jobctl", "prune", "--older-than", "30"],
            vec!["jobctl", "prune", "--older-than", "soon"],
            vec!["jobctl", "prune", "--state", "running"],
            vec!["jobctl", "prune", "--state", "completed,bogus"],
        ] {
            let err = Cli::try_parse_from(&args).expect_err("usage error");
            assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "{args:?}");
        }
    }

    #[test]
    fn exit_codes() {
        use jobd_protocol::ErrorCode;
        assert_eq!(exit_code(&Ok(Outcome::Success)), EXIT_OK);
        assert_eq!(exit_code(&Ok(Outcome::NotCompleted)), EXIT_FAILURE);
        let refused = Error::Client(ClientError::Daemon {
            code: ErrorCode::IdDoesntExist,
            message: "no such job".into(),
        });
        assert_eq!(exit_code(&Err(refused)), EXIT_FAILURE);
        let gone = Error::Client(ClientError::Unreachable {
            path: "/nowhere".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
        assert_eq!(exit_code(&Err(gone)), EXIT_UNAVAILABLE);
        assert_eq!(
            exit_code(&Err(Error::Client(ClientError::Closed))),
            EXIT_UNAVAILABLE
        );
        let untrusted = Error::Client(ClientError::Untrusted {
            path: "/tmp/jobd-1000/jobd.sock".into(),
            uid: 65534,
            pid: Some(42),
            reason: "neither you (uid 1000) nor root, and ...".into(),
        });
        assert_eq!(exit_code(&Err(untrusted)), EXIT_UNAVAILABLE);
    }
}
