//! Giving freed memory back to the system once the daemon goes quiet.
//!
//! A burst of work (thousands of submits, an upload's buffers, a worker's batch)
//! leaves glibc's heaps holding freed pages: the daemon then sits at the burst's
//! high-water mark for as long as it stays idle, which is most of its life. When
//! the last connection closes and no worker runs, and nothing new happens for
//! [`SETTLE`], the store's idle connections drop their page caches and
//! `malloc_trim` returns the freed pages. Event-driven: nothing runs
//! while the daemon is idle, only once on the way into idleness.

use crate::store::SharedStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long the daemon must stay quiet before memory is trimmed.
const SETTLE: Duration = Duration::from_millis(500);

/// Counts what keeps the daemon busy: open connections and running workers.
#[derive(Default)]
pub struct Activity {
    busy: AtomicUsize,
    quiet: Notify,
}

/// Held while a connection is open or a worker runs.
pub struct Busy(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    fn is_quiet(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// Each time the daemon has gone quiet: the store's idle connections drop
    /// their page caches, then the allocator gives back what is free.
    pub async fn trim_when_quiet(self: Arc<Self>, store: SharedStore) {
        loop {
            self.quiet.notified().await;
            tokio::time::sleep(SETTLE).await;
            if self.is_quiet() {
                let store = Arc::clone(&store);
                let _ = tokio::task::spawn_blocking(move || {
                    store.shrink();
                    trim();
                })
                .await;
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.quiet.notify_one();
        }
    }
}

/// Caps glibc's heaps at [`ARENAS`]. By default each thread that allocates gets
/// an arena of its own (up to 8 per CPU): a job's record, built on whichever
/// blocking thread stored it, then pins a page in one of many half-empty heaps,
/// and a paused job costs twice what it does when loaded at start-up. Call before
/// any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

/// Heaps glibc may use: one for the async threads, one for the rest.
const ARENAS: libc::c_int = 2;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own
    // free lists, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
