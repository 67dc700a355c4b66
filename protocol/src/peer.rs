//! Which daemon a client may talk to. Anyone who can create the socket's path (a
//! squatted `/tmp/jobd-<uid>/`, a directory others can write) could otherwise answer
//! the handshake and receive every upload, so a client checks the credentials of
//! the listening process right after connecting, before it sends a byte.
//!
//! The daemon is trusted when it runs as the caller's own user or as root. A daemon
//! of another user is trusted only when nobody but root, the caller and that user
//! controls the way to it: every directory on the resolved path, and the socket,
//! belong to one of them, and no directory can be written by anyone else. A
//! directory anyone may write to (sticky, like `/tmp`) is allowed on the way only if
//! the name taken in it belongs to root or the caller: a name there that the
//! daemon's user made may be a squat. The packaged service passes (user `jobd`,
//! socket in `/run/jobd`, 0750); another user's daemon in `/tmp/jobd-<uid>` does not.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed at most while resolving the socket's path (as the kernel).
const MAX_LINKS: usize = 40;

/// Why the daemon at `socket`, running as `peer`, is not trusted by a client
/// running as `me`; `Ok` when it is.
pub fn check(socket: &Path, me: u32, peer: u32) -> Result<(), String> {
    if peer == me || peer == 0 {
        return Ok(());
    }
    let not_us = format!("neither you (uid {me}) nor root");
    controlled_path(socket, me, peer).map_err(|why| format!("{not_us}, and {why}"))
}

/// Checks that only root, `me` or `owner` control every step of the way to
/// `socket`, the socket included.
fn controlled_path(socket: &Path, me: u32, owner: u32) -> Result<(), String> {
    let trusted = |uid: u32| uid == 0 || uid == me || uid == owner;
    let absolute = if socket.is_absolute() {
        socket.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("the current directory is unknown ({e})"))?
            .join(socket)
    };
    let mut todo: VecDeque<OsString> = names(&absolute);
    let mut dir = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == "/" {
            dir = PathBuf::from("/");
            continue;
        }
        if name == ".." {
            dir.pop();
            continue;
        }
        let dir_meta = stat(&dir, fs::metadata(&dir))?;
        if !trusted(dir_meta.uid()) {
            return Err(format!(
                "{} belongs to uid {}",
                dir.display(),
                dir_meta.uid()
            ));
        }
        let entry = dir.join(&name);
        let meta = stat(&entry, fs::symlink_metadata(&entry))?;
        let mode = dir_meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            let sticky = mode & 0o1000 != 0;
            if !sticky {
                return Err(format!(
                    "{} is writable by others (mode {mode:04o})",
                    dir.display()
                ));
            }
            if meta.uid() != 0 && meta.uid() != me {
                return Err(format!(
                    "{} belongs to uid {} in {}, where anyone may create names (mode {mode:04o})",
                    entry.display(),
                    meta.uid(),
                    dir.display()
                ));
            }
        }
        if meta.file_type().is_symlink() {
            if !trusted(meta.uid()) {
                return Err(format!(
                    "the link {} belongs to uid {}",
                    entry.display(),
                    meta.uid()
                ));
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(format!("too many symbolic links in {}", socket.display()));
            }
            let target = fs::read_link(&entry)
                .map_err(|e| format!("cannot read the link {} ({e})", entry.display()))?;
            for n in names(&target).into_iter().rev() {
                todo.push_front(n);
            }
            continue;
        }
        if todo.is_empty() {
            // The socket itself.
            if !trusted(meta.uid()) {
                return Err(format!("the socket belongs to uid {}", meta.uid()));
            }
            return Ok(());
        }
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", entry.display()));
        }
        dir = entry;
    }
    Err(format!("{} names no socket", socket.display()))
}

/// The components of `path` as names: `/` for the root, `..` for a parent.
fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir => Some(OsString::from("/")),
            Component::ParentDir => Some(OsString::from("..")),
            Component::Normal(n) => Some(n.to_os_string()),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn stat(path: &Path, meta: std::io::Result<Metadata>) -> Result<Metadata, String> {
    meta.map_err(|e| format!("cannot inspect {} ({e})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ME: u32 = 4242;
    const DAEMON: u32 = 4343;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// `TMP/sub/jobd.sock` (a plain file: `check` only looks at owners and modes).
    fn layout(sub_mode: u32) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sub = tmp.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        chmod(&sub, sub_mode);
        let sock = sub.join("jobd.sock");
        fs::write(&sock, b"").expect("file");
        (tmp, sock)
    }

    /// The test's own uid, as the one that owns every directory of `layout`.
    fn owner() -> u32 {
        fs::metadata("/proc/self").expect("stat").uid()
    }

    #[test]
    fn the_callers_own_daemon_and_root_are_always_trusted() {
        let (_tmp, sock) = layout(0o777);
        assert_eq!(check(&sock, ME, ME), Ok(()));
        assert_eq!(check(&sock, ME, 0), Ok(()));
        assert_eq!(check(Path::new("/nonexistent/x.sock"), ME, 0), Ok(()));
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let (tmp, sock) = layout(0o750);
        let sub = tmp.path().join("sub");
        assert_eq!(controlled_path(&sock, owner(), DAEMON), Ok(()));
        chmod(&sub, 0o777);
        let err = check(&sock, owner(), DAEMON).expect_err("0777");
        assert!(err.contains("neither you"), "{err}");
        assert!(
            err.contains(&format!(
                "{} is writable by others (mode 0777)",
                sub.display()
            )),
            "{err}"
        );
        chmod(&sub, 0o770);
        let err = controlled_path(&sock, owner(), DAEMON).expect_err("0770");
        assert!(err.contains("(mode 0770)"), "{err}");
    }

    #[test]
    fn in_a_sticky_directory_only_names_of_root_or_the_caller_count() {
        let (tmp, sock) = layout(0o1777);
        // The caller's own name in a sticky directory is fine...
        assert_eq!(controlled_path(&sock, owner(), DAEMON), Ok(()));
        // ...one that belongs to the daemon's user may be a squat.
        let (me, daemon) = if owner() == 0 {
            std::os::unix::fs::chown(&sock, Some(DAEMON), None).expect("chown");
            (ME, DAEMON)
        } else {
            (ME, owner())
        };
        let err = controlled_path(&sock, me, daemon).expect_err("squattable");
        assert!(err.contains("where anyone may create names"), "{err}");
        drop(tmp);
    }

    #[test]
    fn links_are_followed_and_their_targets_checked() {
        let (tmp, sock) = layout(0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink("sub/./../sub", &link).expect("symlink");
        let via_link = link.join("jobd.sock");
        assert_eq!(controlled_path(&via_link, owner(), DAEMON), Ok(()));
        chmod(&tmp.path().join("sub"), 0o777);
        let err = controlled_path(&via_link, owner(), DAEMON).expect_err("0777");
        assert!(err.contains("sub is writable by others"), "{err}");
        let looped = tmp.path().join("loop");
        std::os::unix::fs::symlink("loop", &looped).expect("symlink");
        let err = controlled_path(&looped.join("x"), owner(), DAEMON).expect_err("loop");
        assert!(err.contains("too many symbolic links"), "{err}");
        drop(sock);
    }
}
