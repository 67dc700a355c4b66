//! A real `jobd` on a temporary socket and state directory, and `jobctl` runs against it.

use crate::backend::{Backend, PgDatabase};
use crate::store::StoreView;
use crate::{bins, DEADLINE, POLL};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long one `jobctl` run may take before the test fails (a hung client is a bug).
pub const JOBCTL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the daemon may take to answer its first ping, or to exit on SIGTERM.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(20);

/// The outcome of one finished process.
#[derive(Debug, Clone)]
pub struct Out {
    /// The command line, for messages.
    pub cmd: String,
    /// Exit code; `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd,
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }
}

impl Out {
    pub fn stdout_str(&self) -> String {
        String::from_utf8(self.stdout.clone())
            .unwrap_or_else(|_| panic!("stdout is not UTF-8: {self}"))
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.code, Some(0), "expected success: {self}");
        self
    }

    /// Asserts this exit code and, if given, a fragment of stderr.
    #[track_caller]
    pub fn expect_code(self, code: i32, stderr_contains: Option<&str>) -> Out {
        assert_eq!(self.code, Some(code), "expected exit code {code}: {self}");
        if let Some(frag) = stderr_contains {
            assert!(
                self.stderr.contains(frag),
                "expected stderr to contain {frag:?}: {self}"
            );
        }
        self
    }

    /// Asserts exit 1 with the daemon's error `code` on stderr.
    #[track_caller]
    pub fn refused(self, code: &str) -> Out {
        self.expect_code(1, Some(code))
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

/// Runs `cmd` to its end with `stdin` (or /dev/null), capturing stdout and stderr;
/// kills it and panics if it takes longer than `timeout`.
pub fn run_with_timeout(mut cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Out {
    let desc = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn `{desc}`: {e}"));
    let pid = child.id();
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A client that stops reading early (refusal) gets EPIPE here; that is fine.
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => Out {
            cmd: desc,
            code: out.status.code(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("waiting for `{desc}` failed: {e}"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("`{desc}` did not finish within {timeout:?}");
        }
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// One `jobd` process (and its restarts) on its own temporary directory:
/// `DIR/run/jobd.sock` (the `run/` directory is left for the daemon to create) and
/// `DIR/state`, and on PostgreSQL its own fresh database. Dropping it kills the
/// daemon (and drops the database); if the test is failing, the daemon's logs are
/// printed.
pub struct Daemon {
    dir: TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub backend: Backend,
    /// The database created for this daemon, dropped with it (after the daemon:
    /// fields drop after `Drop::drop` killed it).
    _pg: Option<PgDatabase>,
    /// `--store`, for PostgreSQL.
    store_url: Option<String>,
    extra: Vec<String>,
    child: Option<Child>,
    starts: u32,
    inputs: AtomicU32,
}

impl Daemon {
    /// Starts a daemon on the embedded store with default options and waits until
    /// it answers.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a daemon on the embedded store with extra flags (`--max-running 1`, ...).
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon::start_on_with(Backend::Sqlite, extra)
    }

    /// Starts a daemon on `backend` with default options.
    pub fn start_on(backend: Backend) -> Daemon {
        Daemon::start_on_with(backend, &[])
    }

    /// Starts a daemon on `backend` with extra flags.
    pub fn start_on_with(backend: Backend, extra: &[&str]) -> Daemon {
        let pg = (backend == Backend::Postgres).then(PgDatabase::create);
        let url = pg.as_ref().map(PgDatabase::url);
        Daemon::start_inner(backend, pg, url, extra)
    }

    /// Starts a daemon on the PostgreSQL database at `url` (one the test made).
    pub fn start_on_url(url: &str, extra: &[&str]) -> Daemon {
        Daemon::start_inner(Backend::Postgres, None, Some(url.to_string()), extra)
    }

    fn start_inner(
        backend: Backend,
        pg: Option<PgDatabase>,
        store_url: Option<String>,
        extra: &[&str],
    ) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("jobd-t")
            .tempdir()
            .expect("temporary directory");
        let mut d = Daemon {
            socket: dir.path().join("run").join("jobd.sock"),
            state_dir: dir.path().join("state"),
            backend,
            _pg: pg,
            store_url,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            starts: 0,
            inputs: AtomicU32::new(0),
        };
        d.spawn();
        d
    }

    /// The temporary directory holding socket, state and test inputs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `jobd` command on this daemon's socket, state directory and store (not
    /// spawned).
    pub fn jobd_command(&self) -> Command {
        let mut cmd = Command::new(&bins().jobd);
        cmd.env_remove("JOBD_STORE")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra);
        if let Some(url) = &self.store_url {
            cmd.arg("--store").arg(url);
        }
        cmd
    }

    /// The URL of this daemon's PostgreSQL database, when it has one.
    pub fn store_url(&self) -> Option<&str> {
        self.store_url.as_deref()
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("jobd-{n}.log"))
    }

    /// Spawns jobd (stdout and stderr to `DIR/jobd-<n>.log`) and waits until it answers.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).expect("daemon log file");
        let child = self
            .jobd_command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("spawn jobd");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls `jobctl ping` until it succeeds; fails early if the daemon exits.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!("jobd exited before answering ({status}):\n{}", self.logs());
                }
            }
            let out = run_with_timeout(self.jobctl_cmd(&["ping"]), None, JOBCTL_TIMEOUT);
            if out.code == Some(0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "jobd did not answer a ping within {DAEMON_TIMEOUT:?}; last try: {out}\n{}",
                self.logs()
            );
            thread::sleep(POLL);
        }
    }

    /// Process id of the running daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is not running").id()
    }

    /// Everything the daemon logged, over all its starts.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.starts {
            let text = fs::read(self.log_path(n)).unwrap_or_default();
            s.push_str(&format!("===== jobd log, start {n} =====\n"));
            s.push_str(&String::from_utf8_lossy(&text));
        }
        s
    }

    /// Sends SIGTERM and waits for the daemon to exit; asserts exit 0 and that the
    /// socket was removed.
    #[track_caller]
    pub fn sigterm_and_wait(&mut self) {
        let status = self.signal_and_wait(Signal::SIGTERM);
        assert!(
            status.success(),
            "jobd exited with {status} after SIGTERM:\n{}",
            self.logs()
        );
        assert!(
            !self.socket.exists(),
            "jobd left its socket {} behind after SIGTERM",
            self.socket.display()
        );
    }

    /// Freezes the daemon (SIGSTOP): it keeps its connections and whatever it
    /// had in hand, and does nothing until [`Daemon::thaw`].
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Lets a frozen daemon go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).expect("signal jobd");
    }

    /// True while the daemon process runs (it may not answer yet).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and reaps it.
    pub fn sigkill(&mut self) {
        self.signal_and_wait(Signal::SIGKILL);
    }

    fn signal_and_wait(&mut self, sig: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon is not running");
        kill(Pid::from_raw(child.id() as i32), sig).expect("signal jobd");
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for jobd") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "jobd did not exit within {DAEMON_TIMEOUT:?} of {sig}:\n{}",
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the daemon again on the same socket and state directory; a running
    /// daemon is first stopped with SIGTERM (asserting a clean exit).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.sigterm_and_wait();
        }
        self.spawn();
    }

    /// The command line `jobctl --socket SOCKET ARGS...` (JOBD_SOCKET removed).
    pub fn jobctl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&bins().jobctl);
        cmd.env_remove("JOBD_SOCKET")
            .arg("--socket")
            .arg(&self.socket)
            .args(args);
        cmd
    }

    /// Runs jobctl with `args` (stdin is /dev/null).
    pub fn jobctl(&self, args: &[&str]) -> Out {
        run_with_timeout(self.jobctl_cmd(args), None, JOBCTL_TIMEOUT)
    }

    /// Runs jobctl with `args`, feeding `stdin`.
    pub fn jobctl_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        run_with_timeout(self.jobctl_cmd(args), Some(stdin.to_vec()), JOBCTL_TIMEOUT)
    }

    /// Writes `bytes` to a fresh input file under the temporary directory.
    pub fn input_file(&self, bytes: &[u8]) -> PathBuf {
        let dir = self.dir.path().join("inputs");
        fs::create_dir_all(&dir).expect("inputs directory");
        let n = self.inputs.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("input-{n}.csv"));
        fs::write(&path, bytes).expect("write input file");
        path
    }

    /// Submits with `-q` and returns the new job's id (asserting exit 0 and a bare id).
    #[track_caller]
    pub fn submit(&self, args: &[&str]) -> String {
        let mut full = vec!["-q"];
        full.extend_from_slice(args);
        let out = self.jobctl(&full).ok();
        bare_id(&out)
    }

    /// `jobctl -q upload FILE [--rate R]` on a file holding `bytes`.
    #[track_caller]
    pub fn upload(&self, bytes: &[u8], rate: Option<f64>) -> String {
        self.submit_file("upload", bytes, rate)
    }

    /// `jobctl -q bulk-team FILE [--rate R]` on a file holding `bytes`.
    #[track_caller]
    pub fn bulk_team(&self, bytes: &[u8], rate: Option<f64>) -> String {
        self.submit_file("bulk-team", bytes, rate)
    }

    #[track_caller]
    fn submit_file(&self, cmd: &str, bytes: &[u8], rate: Option<f64>) -> String {
        let path = self.input_file(bytes);
        let path = path.to_str().expect("UTF-8 temp path").to_string();
        let rate = rate.map(|r| r.to_string());
        let mut args = vec![cmd, path.as_str()];
        if let Some(r) = rate.as_deref() {
            args.extend(["--rate", r]);
        }
        self.submit(&args)
    }

    /// `jobctl -q export --from FROM --to TO [--rate R]`.
    #[track_caller]
    pub fn export(&self, from: &str, to: &str, rate: Option<f64>) -> String {
        let rate = rate.map(|r| r.to_string());
        let mut args = vec!["export", "--from", from, "--to", to];
        if let Some(r) = rate.as_deref() {
            args.extend(["--rate", r]);
        }
        self.submit(&args)
    }

    /// `jobctl --json status ID`, asserting exit 0 and one JSON object.
    #[track_caller]
    pub fn status_json(&self, id: &str) -> Value {
        let v = self.jobctl(&["--json", "status", id]).ok().json();
        assert!(v.is_object(), "status ID --json is not an object: {v}");
        v
    }

    /// `jobctl --json status`: all the caller's jobs.
    #[track_caller]
    pub fn status_all(&self) -> Vec<Value> {
        match self.jobctl(&["--json", "status"]).ok().json() {
            Value::Array(a) => a,
            v => panic!("status --json is not an array: {v}"),
        }
    }

    /// Polls the job's status until `pred` holds; panics with the last status at the
    /// deadline, or as soon as the job finished without satisfying `pred`.
    #[track_caller]
    pub fn wait_until(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status_json(id);
            if pred(&s) {
                return s;
            }
            assert!(
                !is_finished(&s),
                "job {id} finished before {what}: {s}\n{}",
                self.logs()
            );
            assert!(
                Instant::now() < deadline,
                "job {id}: no {what} within {timeout:?}; last status {s}\n{}",
                self.logs()
            );
            thread::sleep(POLL);
        }
    }

    /// Polls until the job is in `state` (any state, finished ones included).
    #[track_caller]
    pub fn wait_for_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status_json(id);
            if s["state"] == state {
                return s;
            }
            assert!(
                !is_finished(&s),
                "job {id} ended {} while waiting for {state}: {s}\n{}",
                s["state"],
                self.logs()
            );
            assert!(
                Instant::now() < deadline,
                "job {id} not {state} within {timeout:?}; last status {s}\n{}",
                self.logs()
            );
            thread::sleep(POLL);
        }
    }

    /// Polls until the job has processed at least `n` units (and is still running).
    #[track_caller]
    pub fn wait_processed(&self, id: &str, n: u64) -> Value {
        self.wait_until(id, &format!("{n} units processed"), DEADLINE, |s| {
            s["processed"].as_u64().unwrap_or(0) + s["failed"].as_u64().unwrap_or(0) >= n
        })
    }

    /// `jobctl wait ID`, asserting exit 0, then the job's status, asserting `completed`.
    #[track_caller]
    pub fn wait_completed(&self, id: &str) -> Value {
        let out = self.jobctl(&["wait", id]);
        let s = self.status_json(id);
        assert_eq!(
            out.code,
            Some(0),
            "jobctl wait {id} failed: {out}\nstatus: {s}\n{}",
            self.logs()
        );
        assert_eq!(s["state"], "completed", "job {id}: {s}");
        s
    }

    /// Asserts the job stays `paused` with unchanged counts for `hold`, polling all the
    /// while; returns its `processed` count.
    #[track_caller]
    pub fn assert_stays_paused(&self, id: &str, hold: Duration) -> u64 {
        let first = self.status_json(id);
        assert_eq!(first["state"], "paused", "job {id} is not paused: {first}");
        let end = Instant::now() + hold;
        while Instant::now() < end {
            thread::sleep(POLL * 5);
            let s = self.status_json(id);
            assert_eq!(s["state"], "paused", "job {id} left paused: {s}");
            assert_eq!(
                (&s["processed"], &s["failed"]),
                (&first["processed"], &first["failed"]),
                "job {id} made progress while paused: {first} -> {s}"
            );
        }
        first["processed"].as_u64().expect("processed is a number")
    }

    /// `jobctl ACTION ID`, asserting exit 0.
    #[track_caller]
    pub fn control(&self, action: &str, id: &str) -> Out {
        self.jobctl(&[action, id]).ok()
    }

    /// Stops the job and asserts it is `paused` right after the answer.
    #[track_caller]
    pub fn stop(&self, id: &str) -> Value {
        self.control("stop", id);
        let s = self.status_json(id);
        assert_eq!(s["state"], "paused", "job {id} not paused after stop: {s}");
        s
    }

    /// `jobctl output ID` (to stdout), asserting exit 0; the raw bytes.
    #[track_caller]
    pub fn output(&self, id: &str) -> Vec<u8> {
        self.jobctl(&["output", id]).ok().stdout
    }

    /// `jobctl --json errors ID` as `(row, message)` pairs, in the order printed.
    #[track_caller]
    pub fn errors(&self, id: &str) -> Vec<(u64, String)> {
        let v = self.jobctl(&["--json", "errors", id]).ok().json();
        let arr = v
            .as_array()
            .unwrap_or_else(|| panic!("errors --json is not an array: {v}"));
        arr.iter()
            .map(|e| {
                let row = e["row"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("row error without a numeric row: {e}"));
                let msg = e["message"]
                    .as_str()
                    .unwrap_or_else(|| panic!("row error without a message: {e}"))
                    .to_string();
                (row, msg)
            })
            .collect()
    }

    /// A view of what the daemon committed, in its SQLite store or its database.
    pub fn store(&self) -> StoreView {
        match &self.store_url {
            Some(url) => StoreView::postgres(url),
            None => StoreView::sqlite(&self.state_dir),
        }
    }

    /// Uploads the store holds (spooled, or being received).
    pub fn uploads(&self) -> usize {
        self.store().uploads()
    }

    /// Paths the daemon process has open right now (from /proc/PID/fd).
    pub fn open_files(&self) -> Vec<PathBuf> {
        let fd_dir = PathBuf::from(format!("/proc/{}/fd", self.pid()));
        let Ok(entries) = fs::read_dir(&fd_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| fs::read_link(e.path()).ok())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "daemon directory: {}\n{}",
                self.dir.path().display(),
                self.logs()
            );
        }
    }
}

/// True when the status object's state is final: `completed`, `failed`,
/// `terminated` or `reverted`.
pub fn is_finished(s: &Value) -> bool {
    matches!(
        s["state"].as_str(),
        Some("completed" | "failed" | "terminated" | "reverted")
    )
}

/// The id printed by a `-q` submit: exactly one line, nothing else.
#[track_caller]
pub fn bare_id(out: &Out) -> String {
    let text = out.stdout_str();
    let id = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("-q output does not end with a newline: {out}"));
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "-q output is not a bare id: {out}"
    );
    id.to_string()
}
