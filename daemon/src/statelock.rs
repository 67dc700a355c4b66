//! One daemon per state directory. Two daemons on one store would both resume the
//! same jobs and apply their units twice, so `jobd` holds an exclusive `flock` on
//! `<state dir>/jobd.lock` for its whole life and writes its pid into it. The
//! kernel releases the lock on any exit, SIGKILL included; the file itself stays
//! (removing it would let a second daemon lock a new file while the first holds the
//! old one).
//!
//! In daemon mode the lock is taken before the fork, so that a busy state directory
//! is reported by the launcher; the daemon inherits the locked open file and
//! [`StateLock::adopt`]s it; the launcher exits without unlocking, since the lock
//! belongs to the open file both processes share.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "jobd.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the state directory {} is in use by another jobd{} (it holds {}); \
         one state directory serves one daemon",
        .dir.display(),
        .pid.map(|p| format!(", pid {p}")).unwrap_or_default(),
        .file.display()
    )]
    Busy {
        dir: PathBuf,
        file: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot lock {}: {source}", .file.display())]
    Io { file: PathBuf, source: io::Error },
}

/// The exclusive lock on a state directory, held until dropped by the process that
/// holds it (see [`StateLock::adopt`]).
#[derive(Debug)]
pub struct StateLock {
    lock: Option<Flock<File>>,
    path: PathBuf,
    /// The process whose drop unlocks.
    holder: u32,
}

impl StateLock {
    /// Locks `state_dir` (which must exist) without waiting, and records this
    /// process's pid in the lock file.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io_err = |source| LockError::Io {
            file: state_dir.join(LOCK_FILE),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((file, Errno::EWOULDBLOCK)) => {
                return Err(LockError::Busy {
                    dir: state_dir.to_path_buf(),
                    pid: holder_pid(&file),
                    file: path,
                })
            }
            Err((_, e)) => return Err(io_err(io::Error::from(e))),
        };
        let mut held = StateLock {
            lock: Some(lock),
            path,
            holder: 0,
        };
        held.adopt().map_err(io_err)?;
        Ok(held)
    }

    /// Makes this process the holder: its pid goes into the lock file and its drop
    /// unlocks. Called by the daemon after the fork of daemon mode.
    pub fn adopt(&mut self) -> io::Result<()> {
        self.holder = std::process::id();
        let Some(file) = self.lock.as_deref() else {
            return Ok(());
        };
        // Write, then cut: a reader sees a whole pid on the first line at any time.
        let line = format!("{}\n", self.holder);
        file.write_all_at(line.as_bytes(), 0)?;
        file.set_len(line.len() as u64)?;
        Ok(())
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        if std::process::id() == self.holder {
            if let Err((lock, _)) = lock.unlock() {
                // Dropping it would panic; the exit closes the file and releases it.
                std::mem::forget(lock);
            }
        } else {
            // Inherited across a fork and never adopted: unlocking would release
            // the lock of the process that holds it (they share the open file).
            // Leave the descriptor to the exit.
            std::mem::forget(lock);
        }
    }
}

/// The pid recorded in a lock file, if it holds one.
fn holder_pid(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines().next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = StateLock::acquire(dir.path()).expect("first lock");
        let text = std::fs::read_to_string(first.path()).expect("read");
        assert_eq!(text, format!("{}\n", std::process::id()));
        // flock locks belong to open files: a second open in the same process conflicts.
        match StateLock::acquire(dir.path()) {
            Err(e @ LockError::Busy { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("pid {}", std::process::id())),
                    "{msg}"
                );
                assert!(msg.contains("jobd.lock"), "{msg}");
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        let again = StateLock::acquire(dir.path()).expect("lock after release");
        assert!(again.path().exists());
    }

    #[test]
    fn a_longer_stale_pid_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(LOCK_FILE), "123456789012\nrest\n").expect("write");
        let lock = StateLock::acquire(dir.path()).expect("lock");
        let text = std::fs::read_to_string(lock.path()).expect("read");
        assert_eq!(text, format!("{}\n", std::process::id()));
    }
}
