//! The two things jobd takes from systemd when it runs under it: a listening socket
//! passed by socket activation (`LISTEN_FDS`), and readiness notification
//! (`NOTIFY_SOCKET`). Both are plain environment protocols; no systemd is needed.

use std::os::unix::net::{UnixDatagram, UnixListener};

/// The socket systemd passed us as fd 3, if `LISTEN_PID` names this process.
#[allow(unsafe_code)]
pub fn activated_listener() -> Option<UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // Children must not believe the socket is theirs.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    use std::os::fd::FromRawFd;
    // SAFETY: the socket-activation protocol hands fd 3 to the process named by
    // LISTEN_PID, which we checked is us; it is taken exactly once, here.
    let listener = unsafe { UnixListener::from_raw_fd(3) };
    let _ = nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(listener)
}

/// Sends a state such as `READY=1` or `STOPPING=1` to the service manager, if any.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}
