//! The pid file of daemon mode. `daemonize` writes and locks it after the fork, where
//! a failure can no longer reach the user, so a live owner is detected before.

use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::path::Path;

/// Refuses when the pid file names a live jobd; a stale file is left to be replaced.
pub fn check_not_running(path: &Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(());
    };
    let alive = kill(Pid::from_raw(pid), None).is_ok();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if alive && comm.trim() == "jobd" {
        return Err(format!(
            "jobd is already running with pid {pid} (pid file {})",
            path.display()
        ));
    }
    Ok(())
}

/// Removes the pid file on exit (`daemonize` leaves it behind).
pub fn remove(path: &Path) {
    if std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        == Some(std::process::id())
    {
        let _ = std::fs::remove_file(path);
    }
}
