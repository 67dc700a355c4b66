//! Harness for the crash and hostile-input tests: seeds that are printed when a test
//! fails (and can be replayed), SIGKILL at random moments while a job runs, store
//! integrity and "effects match the committed cursor" checks, raw frames over the
//! socket, the daemon's memory, and a size-limited tmpfs for the state directory.
//!
//! Kill moments are drawn from a seed, but where a kill lands in the daemon's work
//! also depends on timing: replaying a seed replays the schedule, not the exact
//! interleaving. Every kill point is checked on its own, so a failure says which.

use crate::daemon::is_finished;
use crate::{Daemon, Rng, DEADLINE, POLL};
use jobd_protocol::frame::{decode, encode};
use jobd_protocol::{ErrorCode, Request, Response, UploadKind, PROTOCOL_VERSION};
use serde_json::Value;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------
// Seeds

/// The seed of one test: from the environment variable `var` when set (decimal or
/// `0x` hex), otherwise fresh from the clock so that every run explores new points.
/// It is printed at once, and again with the replay command if the test fails (keep
/// the value alive for the whole test).
pub struct Seed {
    pub value: u64,
    var: &'static str,
    test: String,
}

impl Seed {
    pub fn from_env(var: &'static str, test: &str) -> Seed {
        let value = std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| parse_u64(&v).unwrap_or_else(|| panic!("{var}={v:?} is not a number")))
            .unwrap_or_else(|| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                now ^ (u64::from(std::process::id()) << 32) ^ fnv(test)
            });
        eprintln!("[{test}] seed {value} (replay with {var}={value})");
        Seed {
            value,
            var,
            test: test.to_string(),
        }
    }

    /// A generator for one part of the test; `salt` keeps the parts independent.
    pub fn rng(&self, salt: u64) -> Rng {
        Rng::new(self.value ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "\n*** {} failed with seed {}: replay with {}={} ***\n",
                self.test, self.value, self.var, self.value
            );
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A number from the environment, or `default`.
pub fn env_number(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| parse_u64(&v))
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------
// The store after a crash

pub use crate::store::Committed;

/// Asserts the store is consistent (see [`crate::store::StoreView::assert_integrity`]).
#[track_caller]
pub fn assert_integrity(d: &Daemon) {
    d.store().assert_integrity();
}

/// The job `id` as committed in the store.
#[track_caller]
pub fn committed(d: &Daemon, id: &str) -> Committed {
    d.store().committed(id)
}

/// What was committed for the job is self-consistent: a terminated job has no
/// effects and no row errors; otherwise there is one effect per processed unit and one
/// row error per failed unit, and an export's stored output is exactly its committed
/// length (the SQLite store's file may be longer until the next commit, after a crash).
#[track_caller]
pub fn assert_committed_consistent(d: &Daemon, id: &str) -> Committed {
    let db = d.store();
    let c = db.committed(id);
    assert_eq!(c.orphan_members, 0, "team members without a team: {c:?}");
    if c.state == "terminated" {
        assert_eq!(
            (c.effects, c.row_errors),
            (0, 0),
            "terminated job {id} kept effects: {c:?}"
        );
        return c;
    }
    if c.state == "reverted" {
        // Effects gone; the counts and row errors stay as the record of the run.
        assert_eq!(c.effects, 0, "reverted job {id} kept effects: {c:?}");
        assert_eq!(
            c.row_errors, c.failed,
            "reverted job {id}: row errors vs failed: {c:?}"
        );
        return c;
    }
    if c.kind == "createExport" {
        if let Some(stored) = c.stored_output {
            assert_eq!(
                stored, c.output_len,
                "export {id}: output vs committed length {c:?}"
            );
        } else {
            // The file may hold more than what committed: an uncommitted tail after
            // a crash, or what the daemon is appending right now.
            let stored = db.output(id).map_or(0, |o| o.len() as u64);
            if c.state == "completed" {
                assert_eq!(
                    stored, c.output_len,
                    "export {id}: file vs committed length {c:?}"
                );
            } else {
                assert!(
                    stored >= c.output_len,
                    "export {id}: file has {stored} bytes, {} committed: {c:?}",
                    c.output_len
                );
            }
        }
    } else {
        assert_eq!(
            c.effects, c.processed,
            "job {id}: effects committed vs processed: {c:?}"
        );
    }
    assert_eq!(
        c.row_errors, c.failed,
        "job {id}: row errors committed vs failed: {c:?}"
    );
    c
}

/// Overwrites the job's committed state, with the daemon stopped (to simulate a crash
/// at a moment too short to hit by timing, such as inside a terminate's rollback).
#[track_caller]
pub fn set_stored_state(d: &Daemon, id: &str, state: &str) {
    crate::store::set_state(&d.store(), id, state);
}

// ---------------------------------------------------------------------------------
// SIGKILL while a job runs

/// Processed plus failed units of a status object.
pub fn units(s: &Value) -> u64 {
    s["processed"].as_u64().unwrap_or(0) + s["failed"].as_u64().unwrap_or(0)
}

/// SIGKILLs the daemon up to `max_kills` times while job `id` runs, each after a
/// delay drawn from `rng` within `window(units handled so far)` (now and then almost at
/// once, to hit the moments right after a start). After every kill the daemon is
/// restarted on the same state and checked: `integrity_check` is `ok`, no progress a
/// client was shown before the kill is lost, and the committed effects match the
/// committed counters. Stops early once the job has finished. Returns the kills made
/// while the job was still unfinished (the kill points).
pub fn kill_while_running(
    d: &mut Daemon,
    id: &str,
    rng: &mut Rng,
    max_kills: u32,
    window: impl Fn(u64) -> Duration,
) -> u32 {
    let mut points = 0;
    let mut done = 0;
    for _ in 0..max_kills {
        let w = window(done).as_millis().max(2) as u64;
        let delay = if rng.chance(12) {
            rng.below(4)
        } else {
            rng.below(w)
        };
        thread::sleep(Duration::from_millis(delay));
        let before = d.status_json(id);
        if is_finished(&before) {
            break;
        }
        d.sigkill();
        points += 1;
        d.restart();
        assert_integrity(d);
        let c = assert_committed_consistent(d, id);
        let after = c.processed + c.failed;
        assert!(
            after >= units(&before),
            "job {id}: {} units were reported before the kill, only {after} committed after it: {before} / {c:?}",
            units(&before)
        );
        assert_ne!(c.state, "failed", "job {id} failed after a kill: {c:?}");
        done = after;
    }
    points
}

// ---------------------------------------------------------------------------------
// Processes

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`, ...).
pub fn proc_kb(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Asserts the daemon process exists and is not a zombie (it is the test's child, so
/// a daemon that died stays a zombie until reaped).
#[track_caller]
pub fn assert_alive(d: &Daemon) {
    let pid = d.pid();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("jobd (pid {pid}) is gone: {e}\n{}", d.logs()));
    // "PID (comm) STATE ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?");
    assert_ne!(state, "Z", "jobd (pid {pid}) died:\n{}", d.logs());
}

/// Polls until `cond` holds, panicking with `what` after `timeout`.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        thread::sleep(POLL);
    }
}

/// Polls until the daemon is receiving an upload: on SQLite, until its spool holds
/// at least `bytes`; on PostgreSQL, until a transaction of the daemon holds written
/// upload rows (it writes in chunks of 1 MiB, so `bytes` must reach that).
#[track_caller]
pub fn wait_receiving(d: &Daemon, bytes: u64) {
    wait_for(
        &format!("{bytes} bytes of an upload received"),
        DEADLINE,
        || receiving(d, bytes),
    );
}

/// Whether the daemon is receiving an upload (see [`wait_receiving`]).
pub fn receiving(d: &Daemon, bytes: u64) -> bool {
    match d.backend {
        crate::Backend::Sqlite => spool_bytes(d) >= bytes,
        crate::Backend::Postgres => d.uploads() > 0,
    }
}

fn spool_bytes(d: &Daemon) -> u64 {
    fs::read_dir(d.state_dir.join("spool"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------
// Raw frames

/// What one read from the daemon gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Frame(Response),
    /// The daemon closed the connection (between frames, or reset).
    Closed,
    /// Nothing arrived within the read timeout.
    Timeout,
    /// Something that is not a valid response frame (a daemon bug).
    Garbage(String),
}

/// A connection spoken frame by frame, for tests that send what no client would.
pub struct Wire {
    pub stream: UnixStream,
}

impl Wire {
    /// Connects, with a 10 s read timeout.
    pub fn connect(d: &Daemon) -> Wire {
        Wire::connect_path(&d.socket)
    }

    pub fn connect_path(socket: &Path) -> Wire {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
        let w = Wire { stream };
        w.read_timeout(Duration::from_secs(10));
        w
    }

    /// Connects and completes the handshake.
    pub fn hello(d: &Daemon) -> Wire {
        let mut w = Wire::connect(d);
        w.send(&Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "jobd-tests/crash".into(),
        })
        .expect("send Hello");
        match w.recv() {
            Received::Frame(Response::Welcome { .. }) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Connects, completes the handshake and starts an upload of `kind`: the
    /// daemon has answered `Ready` and waits for chunks.
    pub fn start_upload(d: &Daemon, kind: UploadKind) -> Wire {
        let mut w = Wire::hello(d);
        w.send(&Request::SubmitUpload { kind, rate: None })
            .expect("send SubmitUpload");
        assert_eq!(w.recv(), Received::Frame(Response::Ready));
        w
    }

    pub fn read_timeout(&self, t: Duration) {
        self.stream
            .set_read_timeout(Some(t))
            .expect("set read timeout");
    }

    pub fn send(&mut self, req: &Request) -> std::io::Result<()> {
        self.send_raw(&encode(req).expect("encode request"))
    }

    /// Writes bytes as they are; a daemon that already closed gives an error here.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Tells the daemon nothing more will come (it sees end of stream).
    pub fn finish(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// The next frame from the daemon.
    pub fn recv(&mut self) -> Received {
        let mut len = [0u8; 4];
        match read_full(&mut self.stream, &mut len) {
            Ok(0) => return Received::Closed,
            Ok(4) => {}
            Ok(n) => return Received::Garbage(format!("connection closed after {n} length bytes")),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Received::Timeout
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Received::Closed,
            Err(e) => return Received::Garbage(format!("reading a length: {e}")),
        }
        let n = u32::from_be_bytes(len);
        if n > jobd_protocol::DEFAULT_MAX_FRAME {
            return Received::Garbage(format!("the daemon sent a frame of {n} bytes"));
        }
        let mut body = vec![0u8; n as usize];
        match read_full(&mut self.stream, &mut body) {
            Ok(got) if got == body.len() => {}
            Ok(got) => {
                return Received::Garbage(format!("frame of {n} bytes cut after {got}"));
            }
            Err(e) => return Received::Garbage(format!("reading a body of {n} bytes: {e}")),
        }
        match decode::<Response>(&body) {
            Ok(r) => Received::Frame(r),
            Err(e) => Received::Garbage(format!("undecodable response {body:02x?}: {e}")),
        }
    }

    /// Reads until the daemon closes; every frame must be a valid response. Panics on
    /// garbage, on a read timeout and on more than `max` frames.
    #[track_caller]
    pub fn until_closed(&mut self, max: usize) -> Vec<Response> {
        let mut seen = Vec::new();
        loop {
            match self.recv() {
                Received::Frame(r) => {
                    seen.push(r);
                    assert!(seen.len() <= max, "the daemon keeps talking: {seen:?}");
                }
                Received::Closed => return seen,
                other => panic!("expected frames then a close, got {other:?} after {seen:?}"),
            }
        }
    }

    /// A ping on this connection, answered by `Pong` within the read timeout.
    #[track_caller]
    pub fn ping(&mut self) {
        self.send(&Request::Ping).expect("send Ping");
        match self.recv() {
            Received::Frame(Response::Pong) => {}
            other => panic!("expected Pong, got {other:?}"),
        }
    }
}

/// Reads until `buf` is full or the stream ends; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if got > 0 && e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// True for an `Error` frame with this code.
pub fn is_error(r: &Response, code: ErrorCode) -> bool {
    matches!(r, Response::Error { code: c, .. } if *c == code)
}

// ---------------------------------------------------------------------------------
// A small filesystem for the state directory

/// A tmpfs mounted for the test; unmounted (lazily, even if busy) on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=SIZE tmpfs PATH`; `Err` says why it is not possible here.
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(path).map_err(|e| format!("create {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Free bytes on the filesystem.
    pub fn free_bytes(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.path).expect("statvfs");
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

/// Moves the daemon's state directory onto a fresh tmpfs of `size`: stops the daemon
/// (SIGTERM), mounts over its (then hidden) state directory and starts it again on
/// the empty filesystem. Keep the returned value alive for the daemon's lifetime.
pub fn state_on_tmpfs(d: &mut Daemon, size: &str) -> Result<Tmpfs, String> {
    d.sigterm_and_wait();
    let fs = Tmpfs::mount(&d.state_dir, size);
    d.restart();
    fs
}
