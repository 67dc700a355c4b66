//! Remembering ids the daemon said do not exist, when they never can.
//!
//! `GET /updateTask` for an unknown id is the hot path of the legacy API (clients
//! probing or polling stale ids), and asking the daemon costs a round trip on the
//! socket. The daemon builds every id as `<user>-<kind>-<unix seconds>-<n>` with
//! the current time, and never reuses one. So once this daemon has said that an
//! id does not exist, the id can never appear later if it is not shaped like a
//! job id at all, or if its time lies more than [`MARGIN`] in the past (the
//! margin covers the time between an id's allocation and its job becoming
//! visible). Such ids are remembered and answered 404 without a round trip.
//!
//! What is remembered holds for one daemon only. A *sentinel* connection to the
//! daemon, idle on purpose, tells whether that daemon is still the one answering:
//! a background task waits for it to become readable. When the daemon exits (or
//! replaces the connection after its idle timeout), the task wakes, the cache is
//! emptied, and requests go to the daemon again (503 while it is down); the task
//! opens a new sentinel once a daemon answers again. Requests only read a flag the
//! task keeps: no system call on the hot path (an earlier per-request peek cost a
//! third of the shim's system calls). The flag trails a daemon's exit by the time
//! the task takes to be scheduled; the ids answered in that window are ones no
//! daemon on the same store can create anyway.

use super::pool;
use jobd_protocol::client::connect_trusted;
use jobd_protocol::frame::{self, DEFAULT_MAX_FRAME};
use jobd_protocol::{Request, Response, PROTOCOL_VERSION};
use nix::sys::socket::{recv, MsgFlags};
use std::collections::HashSet;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::watch;

/// How far in the past an id's time must lie for it to be remembered.
pub const MARGIN: Duration = Duration::from_secs(300);

/// At most this many ids are remembered (then the set starts over).
const CAPACITY: usize = 16_384;

/// How often a missing sentinel is retried while no daemon answers.
const RETRY: Duration = Duration::from_millis(200);

/// How long opening a sentinel may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

pub struct MissingIds {
    ids: Mutex<HashSet<Box<str>>>,
    sentinel: Mutex<Option<Arc<UnixStream>>>,
    /// True while a sentinel is installed and has not been seen to close.
    trusted: AtomicBool,
    /// Bumped whenever the sentinel changes: answers learnt under another
    /// generation are not remembered.
    generation: AtomicU64,
}

impl MissingIds {
    pub fn new() -> Arc<MissingIds> {
        Arc::new(MissingIds {
            ids: Mutex::new(HashSet::new()),
            sentinel: Mutex::new(None),
            trusted: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        })
    }

    fn ids(&self) -> MutexGuard<'_, HashSet<Box<str>>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sentinel(&self) -> MutexGuard<'_, Option<Arc<UnixStream>>> {
        self.sentinel.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current generation, to pass to [`MissingIds::remember`] with what the
    /// daemon answers to a request sent after this call.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True if `id` is known not to exist, and the daemon that said so still runs.
    pub fn is_missing(&self, id: &str) -> bool {
        self.daemon_unchanged() && self.ids().contains(id)
    }

    /// Records that the daemon answered `id_doesn't_exist` for `id` to a request
    /// sent in generation `generation`, if the id can never appear later.
    pub fn remember(&self, id: &str, generation: u64, asked_at: SystemTime) {
        if !never_created_after(id, asked_at) || !self.daemon_unchanged() {
            return;
        }
        let mut ids = self.ids();
        if self.generation() != generation {
            return;
        }
        if ids.len() >= CAPACITY {
            ids.clear();
        }
        ids.insert(id.into());
    }

    /// Is the daemon that answered still the one listening?
    fn daemon_unchanged(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    fn forget(&self) {
        let mut ids = self.ids();
        self.trusted.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        ids.clear();
    }

    fn install(&self, stream: Arc<UnixStream>) {
        let mut ids = self.ids();
        self.generation.fetch_add(1, Ordering::AcqRel);
        ids.clear();
        *self.sentinel() = Some(stream);
        self.trusted.store(true, Ordering::Release);
    }

    /// Opens a sentinel now if a daemon answers (so that the cache works from the
    /// first request), then keeps one open in the background until shutdown.
    pub async fn start(self: &Arc<Self>, socket: PathBuf, shutdown: watch::Receiver<bool>) {
        let first = open_sentinel(&socket).await.map(Arc::new);
        if let Some(stream) = &first {
            self.install(Arc::clone(stream));
        }
        tokio::spawn(Arc::clone(self).keep_sentinel(socket, shutdown, first));
    }

    async fn keep_sentinel(
        self: Arc<Self>,
        socket: PathBuf,
        mut shutdown: watch::Receiver<bool>,
        mut current: Option<Arc<UnixStream>>,
    ) {
        loop {
            let stream = match current.take() {
                Some(s) => s,
                None => {
                    let opened = tokio::select! {
                        s = open_sentinel(&socket) => s,
                        _ = shutdown.wait_for(|d| *d) => return,
                    };
                    let Some(stream) = opened else {
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY) => continue,
                            _ = shutdown.wait_for(|d| *d) => return,
                        }
                    };
                    let stream = Arc::new(stream);
                    self.install(Arc::clone(&stream));
                    stream
                }
            };
            // Wake up when it has something to say (an end, a frame), then retire it.
            loop {
                tokio::select! {
                    r = stream.readable() => if r.is_err() { break },
                    _ = shutdown.wait_for(|d| *d) => return,
                }
                let fd = stream.as_raw_fd();
                let peeked = stream.try_io(Interest::READABLE, || peek(fd));
                if !matches!(&peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                    break;
                }
            }
            self.retire(&stream);
        }
    }

    /// Drops `stream` if it is still the sentinel, and what it vouched for.
    fn retire(&self, stream: &Arc<UnixStream>) {
        let mut sentinel = self.sentinel();
        if sentinel.as_ref().is_some_and(|s| Arc::ptr_eq(s, stream)) {
            *sentinel = None;
            drop(sentinel);
            self.forget();
        }
    }
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte: `WouldBlock` while open and silent.
fn peek(fd: std::os::fd::RawFd) -> io::Result<usize> {
    let mut byte = [0u8; 1];
    recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
}

/// Connects and says `Hello`; `None` if no daemon answers (in time).
async fn open_sentinel(socket: &Path) -> Option<UnixStream> {
    tokio::time::timeout(OPEN_TIMEOUT, handshake(socket))
        .await
        .ok()
        .flatten()
}

async fn handshake(socket: &Path) -> Option<UnixStream> {
    // The same check as every connection: nothing goes to an untrusted peer.
    let mut stream = connect_trusted(socket)
        .await
        .inspect_err(pool::log_refusal)
        .ok()?;
    let hello = Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        client: concat!("jobd-http/", env!("CARGO_PKG_VERSION"), " sentinel").to_string(),
    };
    let frame = frame::encode(&hello).ok()?;
    stream.write_all(&frame).await.ok()?;
    match frame::read_message::<Response, _>(&mut stream, DEFAULT_MAX_FRAME).await {
        Ok(Some(Response::Welcome { .. })) => Some(stream),
        _ => None,
    }
}

/// Can no job with this id be created after `asked_at`? True if the id is not
/// shaped `<user>-<kind>-<secs>-<n>`, or if its time is more than [`MARGIN`]
/// before `asked_at`.
pub fn never_created_after(id: &str, asked_at: SystemTime) -> bool {
    let mut parts = id.rsplitn(4, '-');
    let (Some(n), Some(secs), Some(kind), Some(user)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return true;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if user.is_empty()
        || !digits(n)
        || !digits(secs)
        || !matches!(kind, "baselineCSV" | "bulkTeam" | "createExport")
    {
        return true;
    }
    let Ok(secs) = secs.parse::<u64>() else {
        // More digits than any time: never now.
        return true;
    };
    let now = asked_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs.saturating_add(MARGIN.as_secs()) < now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_ids_can_never_appear() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for id in [
            "nope",
            "",
            "a-b-c",
            "Jon-Doe-bulkTeam-1-1",
            "alice-createExport-1799999000-7",
            "alice-other-1799999999-7",
            "alice-bulkTeam-17999x9999-7",
            "-bulkTeam-1799999999-7",
            "alice-bulkTeam-99999999999999999999999-1",
        ] {
            assert!(never_created_after(id, now), "{id}");
        }
        for id in [
            "alice-bulkTeam-1799999999-7",
            "Jon-Doe-baselineCSV-1799999800-12345",
            "alice-createExport-1800000100-0",
        ] {
            assert!(!never_created_after(id, now), "{id}");
        }
    }

    #[test]
    fn nothing_is_remembered_without_a_sentinel() {
        let cache = MissingIds::new();
        let g = cache.generation();
        cache.remember("nope", g, SystemTime::now());
        assert!(!cache.is_missing("nope"));
    }
}
