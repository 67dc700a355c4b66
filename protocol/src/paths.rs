//! Where the daemon listens by default, shared so that every client finds it the
//! same way: `--socket`, then `JOBD_SOCKET`, then these defaults.

use std::path::PathBuf;

/// Environment variable naming the socket path.
pub const SOCKET_ENV: &str = "JOBD_SOCKET";

/// Root uses `/run/jobd/jobd.sock`; other users `$XDG_RUNTIME_DIR/jobd/jobd.sock`,
/// or `/tmp/jobd-<uid>/jobd.sock` when there is no runtime directory.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let uid = current_uid();
    if uid == 0 {
        return PathBuf::from("/run/jobd/jobd.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("jobd").join("jobd.sock"),
        None => PathBuf::from(format!("/tmp/jobd-{uid}/jobd.sock")),
    }
}

fn current_uid() -> u32 {
    // /proc/self is owned by the real uid of the process; avoids unsafe libc calls here.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}
