//! Checkpoints on a thread of their own.
//!
//! In WAL mode every page is written twice: once to the WAL at commit, once into
//! the database by a checkpoint. Left to SQLite, the checkpoint runs inside the
//! commit that crosses `wal_autocheckpoint`, on the committing thread — for an
//! ingest, on the worker, stalling it for every few batches. Here writers that
//! commit in bulk only nudge this thread, which copies the WAL back while they go
//! on (a PASSIVE checkpoint never blocks a writer). The WAL then stays about one
//! batch long: the next writer starts it over once everything is copied back.
//! `wal_autocheckpoint` stays on, higher, as a bound should this thread fall behind.

use super::open_connection;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

/// A handle to the checkpoint thread; the thread ends when the last handle drops.
#[derive(Clone)]
pub struct Checkpointer {
    nudge: SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread, with its own connection to `path`.
    pub fn start(path: &Path) -> std::io::Result<Checkpointer> {
        // One pending nudge is enough: a checkpoint copies everything committed.
        let (nudge, rx) = sync_channel(1);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("jobd-checkpoint".into())
            .spawn(move || run(&path, &rx))?;
        Ok(Checkpointer { nudge })
    }

    /// Asks for a checkpoint soon; never blocks.
    pub fn nudge(&self) {
        match self.nudge.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

fn run(path: &Path, nudges: &Receiver<()>) {
    let conn = match open_connection(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no checkpoint thread: SQLite checkpoints at commit instead");
            return;
        }
    };
    while nudges.recv().is_ok() {
        // Busy (another checkpoint is running) or an I/O error: the next nudge,
        // or a commit crossing `wal_autocheckpoint`, tries again.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint failed");
        }
    }
}
