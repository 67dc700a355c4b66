//! Helpers for the tests of jobd as a service: daemon mode, configuration, systemd
//! (socket activation, readiness, unit files) and clients running as other users.
//!
//! Everything waits by polling with a deadline ([`poll`]), never by sleeping and hoping.

use crate::daemon::{DAEMON_TIMEOUT, JOBCTL_TIMEOUT};
use crate::{bins, run_with_timeout, Out, POLL};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// uid and gid of `nobody` / `nogroup` on Debian.
pub const NOBODY: u32 = 65534;
pub const NOGROUP: u32 = 65534;

/// Environment variables that would change what `jobd` or `jobctl` do behind a
/// test's back; every command built here removes them.
const AMBIENT: &[&str] = &[
    "JOBD_CONFIG",
    "JOBD_SOCKET",
    "JOBD_STATE_DIR",
    "JOBD_LOG_DIR",
    "JOBD_LOG",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// True when the tests run as root (as CI does); the two-user tests need it.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The repository's `packaging/` directory.
pub fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .join("packaging")
}

/// `jobd-http`, built next to `jobd` by the harness.
pub fn jobd_http_bin() -> PathBuf {
    let path = bins().jobd.with_file_name("jobd-http");
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// Polls `f` every [`POLL`] until it returns `Some`; panics after `timeout`, naming
/// `what` and the last value of `last` (a diagnostic computed only then).
#[track_caller]
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    last: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}; {}",
            last()
        );
        thread::sleep(POLL);
    }
}

/// `jobd ARGS` with the ambient `JOBD_*` and systemd variables removed.
pub fn jobd_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(&bins().jobd);
    for var in AMBIENT {
        cmd.env_remove(var);
    }
    cmd.args(args);
    cmd
}

/// Runs `jobd ARGS` to its end (it must end within [`DAEMON_TIMEOUT`]).
pub fn run_jobd(args: &[&str]) -> Out {
    run_with_timeout(jobd_cmd(args), None, DAEMON_TIMEOUT)
}

/// `jobctl --socket SOCKET ARGS` as the test's own user.
pub fn jobctl_at(socket: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(&bins().jobctl);
    for var in AMBIENT {
        cmd.env_remove(var);
    }
    cmd.arg("--socket").arg(socket).args(args);
    run_with_timeout(cmd, None, JOBCTL_TIMEOUT)
}

/// The `key = value` lines of `jobd --check-config`, values without TOML quotes.
#[track_caller]
pub fn effective_config(out: &Out) -> BTreeMap<String, String> {
    out.stdout_str()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once(" = ")
                .unwrap_or_else(|| panic!("not a `key = value` line: {l:?} in {out}"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

/// `/proc/PID/stat` fields after the command name: state, ppid, pgrp, session, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// True while `pid` exists and is not a zombie (a reaped-late exit counts as gone).
pub fn process_alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// The command name of `pid` (`/proc/PID/comm`, at most 15 bytes).
pub fn process_comm(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// The session id of `pid`.
pub fn process_session(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(3)?.parse().ok()
}

/// Reads a pid file: one decimal pid and a newline.
#[track_caller]
pub fn read_pid_file(path: &Path) -> i32 {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the pid file {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file {} holds {text:?}", path.display()))
}

/// Polls until the pid file holds a pid. (`jobd --daemon` may return before the
/// detached daemon has written it: the `daemonize` crate writes it after the fork
/// whose parent the launcher waits for.)
#[track_caller]
pub fn wait_pid_file(path: &Path) -> i32 {
    poll(
        &format!("pid in {}", path.display()),
        DAEMON_TIMEOUT,
        || fs::read_to_string(path).ok()?.trim().parse().ok(),
        || format!("{:?}", fs::read_to_string(path)),
    )
}

/// Kills (SIGKILL) the jobd processes it was told about, if still alive, when
/// dropped: a failing test must not leave detached daemons behind. Watch the pid
/// file before starting a daemon, so that even a test failing before it learns
/// the pid cleans up.
#[derive(Default)]
pub struct KillOnDrop {
    pids: Vec<i32>,
    pid_files: Vec<PathBuf>,
}

impl KillOnDrop {
    pub fn watch(&mut self, pid: i32) {
        self.pids.push(pid);
    }

    pub fn watch_pid_file(&mut self, path: &Path) {
        self.pid_files.push(path.to_path_buf());
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let from_files = self
            .pid_files
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok()?.trim().parse::<i32>().ok());
        let pids: Vec<i32> = self.pids.iter().copied().chain(from_files).collect();
        for pid in pids {
            if process_alive(pid) && process_comm(pid).as_deref() == Some("jobd") {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Sends `sig` to `pid` and waits until the process is gone.
#[track_caller]
pub fn signal_and_wait_gone(pid: i32, sig: Signal, diag: impl Fn() -> String) {
    kill(Pid::from_raw(pid), sig).expect("signal the daemon");
    poll(
        &format!("exit of pid {pid} after {sig}"),
        DAEMON_TIMEOUT,
        || (!process_alive(pid)).then_some(()),
        diag,
    );
}

/// The concatenated content of the files in `dir` whose names start with `prefix`.
pub fn read_logs(dir: &Path, prefix: &str) -> String {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|p| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned())
        .collect()
}

/// The permission bits of `path` (without following a final symlink).
#[track_caller]
pub fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Puts `src` at `dest` (a hard link when possible, else a copy), mode 0755.
#[track_caller]
pub fn install_exe(src: &Path, dest: &Path) {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).expect("create the destination directory");
    }
    let _ = fs::remove_file(dest);
    if fs::hard_link(src, dest).is_err() {
        fs::copy(src, dest)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dest.display()));
    }
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
}

/// Lays out a minimal root for `systemd-analyze verify --root=ROOT`: the packaged
/// units, stand-ins for the programs they run, and the host's targets and slices
/// (which the units' default dependencies name).
pub fn unit_verify_root(root: &Path) {
    let units = root.join("usr/lib/systemd/system");
    fs::create_dir_all(&units).expect("unit directory");
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .expect("the host has systemd's units (sysinit.target)");
    for entry in fs::read_dir(host_units).expect("read the host's units") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if (name.ends_with(".target") || name.ends_with(".slice")) && path.is_file() {
            fs::copy(&path, units.join(name)).expect("copy a host unit");
        }
    }
    for unit in ["jobd.service", "jobd.socket", "jobd-http.service"] {
        fs::copy(packaging_dir().join("systemd").join(unit), units.join(unit))
            .expect("copy a packaged unit");
    }
    install_exe(&bins().jobd, &root.join("usr/bin/jobd"));
    install_exe(&bins().jobctl, &root.join("usr/bin/jobctl"));
    install_exe(&jobd_http_bin(), &root.join("usr/bin/jobd-http"));
    let kill_bin = ["/bin/kill", "/usr/bin/kill"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("kill(1) exists");
    install_exe(kill_bin, &root.join("bin/kill"));
}

/// The value of `Key=` in a unit file (the last one, as systemd reads it).
#[track_caller]
pub fn unit_value(unit: &str, key: &str) -> String {
    let path = packaging_dir().join("systemd").join(unit);
    let text = fs::read_to_string(&path).expect("read the unit");
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{unit} has no {key}="))
        .to_string()
}

/// A client running as another user: `setpriv --reuid --regid --clear-groups`.
pub struct AsUser {
    pub uid: u32,
    pub gid: u32,
    /// A `jobctl` that user may execute.
    pub jobctl: PathBuf,
    pub socket: PathBuf,
}

impl AsUser {
    /// `PROGRAM ARGS...` as this user, with no supplementary groups.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        for var in AMBIENT {
            cmd.env_remove(var);
        }
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program)
            .args(args);
        cmd
    }

    fn jobctl_cmd(&self, args: &[&str]) -> Command {
        let socket = self.socket.to_str().expect("UTF-8 socket path");
        let mut full = vec!["--socket", socket];
        full.extend_from_slice(args);
        self.command(&self.jobctl, &full)
    }

    /// `jobctl --socket SOCKET ARGS` as this user.
    pub fn jobctl(&self, args: &[&str]) -> Out {
        run_with_timeout(self.jobctl_cmd(args), None, JOBCTL_TIMEOUT)
    }

    /// The same, feeding `stdin`.
    pub fn jobctl_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        run_with_timeout(self.jobctl_cmd(args), Some(stdin.to_vec()), JOBCTL_TIMEOUT)
    }
}
