//! Who may do what, with two real uids: the daemon runs as root with
//! `--socket-group nogroup`; a second client runs as nobody:nogroup through
//! `setpriv --reuid=65534 --regid=65534 --clear-groups`. The daemon learns the
//! caller from the socket's peer credentials only.
//!
//! These tests need root (CI runs as root); as another user they say so and pass.

use jobd_tests::daemon::DAEMON_TIMEOUT;
use jobd_tests::service::{
    install_exe, is_root, jobctl_at, mode_of, poll, AsUser, NOBODY, NOGROUP,
};
use jobd_tests::{
    bare_id, bins, both_stores, expected_export, gen_baseline, run_with_timeout, slow_baseline,
    Backend, Daemon, Date, MID_RUN, SLOW_RATE,
};
use serde_json::Value;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A gid that nobody is not a member of (no such group needs to exist).
const OTHER_GID: u32 = 23456;

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped: needs root to run a second uid (CI runs as root)");
    true
}

/// A daemon as root whose socket group is nogroup, in a directory every user may
/// traverse, and nobody's client for it.
fn daemon_and_nobody(b: Backend) -> (Daemon, AsUser) {
    let d = Daemon::start_on_with(b, &["--socket-group", "nogroup"]);
    // The harness's temporary directory is 0700: open it so that the socket
    // directory's own mode (0750 root:nogroup) is what decides.
    fs::set_permissions(d.dir(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let jobctl = d.dir().join("bin/jobctl");
    install_exe(&bins().jobctl, &jobctl);
    let nobody = AsUser {
        uid: NOBODY,
        gid: NOGROUP,
        jobctl,
        socket: d.socket.clone(),
    };
    (d, nobody)
}

fn ids(statuses: &Value) -> Vec<String> {
    statuses
        .as_array()
        .unwrap_or_else(|| panic!("status --json is not an array: {statuses}"))
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn the_socket_belongs_to_its_group() {
    if skip_unless_root("the_socket_belongs_to_its_group") {
        return;
    }
    let (d, nobody) = daemon_and_nobody(Backend::Sqlite);
    let dir = d.socket.parent().expect("socket directory");
    assert_eq!(mode_of(dir), 0o750, "socket directory mode");
    assert_eq!(fs::metadata(dir).expect("stat").gid(), NOGROUP);
    assert_eq!(mode_of(&d.socket), 0o660, "socket mode");
    assert_eq!(fs::metadata(&d.socket).expect("stat").gid(), NOGROUP);

    // A member of the group gets in, and the daemon names it by its uid.
    let pong = nobody.jobctl(&["ping"]).ok();
    assert!(pong.stdout_str().contains("user nobody"), "{pong}");

    // A user outside the group cannot even reach the socket.
    let outsider = AsUser {
        gid: OTHER_GID,
        ..nobody
    };
    let out = outsider.jobctl(&["ping"]);
    assert_eq!(out.code, Some(3), "outsider reached the daemon: {out}");
    assert!(out.stderr.contains("ermission denied"), "{out}");
    let out = outsider.jobctl(&["status"]);
    assert_eq!(out.code, Some(3), "{out}");
}

fn another_user_can_neither_see_nor_control_a_job_and_root_can(b: Backend) {
    if skip_unless_root("another_user_can_neither_see_nor_control_a_job_and_root_can") {
        return;
    }
    let (d, nobody) = daemon_and_nobody(b);

    // root: a paused job, a completed job with a row error, a completed export.
    let paused = d.upload(&slow_baseline(1).bytes(), Some(SLOW_RATE));
    d.wait_processed(&paused, MID_RUN);
    let before = d.stop(&paused);
    let with_error = d.upload(b"date,v\n2024-01-01,1\nnot-a-date,2\n", None);
    d.wait_completed(&with_error);
    assert_eq!(d.errors(&with_error).len(), 1);
    let export = d.export("2024-01-01", "2024-01-02", None);
    d.wait_completed(&export);
    let root_jobs = [paused.clone(), with_error.clone(), export.clone()];

    // nobody: one job of its own, through stdin.
    let out = nobody
        .jobctl_stdin(
            &["-q", "upload", "-", "--wait"],
            b"date,v\n2024-01-01,7\n2024-01-02,8\n",
        )
        .ok();
    let mine = bare_id(&out);
    assert!(mine.starts_with("nobody-baselineCSV-"), "{mine}");

    // nobody's status lists only nobody's job.
    let listed = ids(&nobody.jobctl(&["--json", "status"]).ok().json());
    assert_eq!(listed, vec![mine.clone()], "nobody sees: {listed:?}");
    let text = nobody.jobctl(&["status"]).ok().stdout_str();
    for id in &root_jobs {
        assert!(!text.contains(id.as_str()), "{id} shown to nobody: {text}");
    }

    // Every request naming one of root's jobs is refused with permission_denied.
    for id in &root_jobs {
        for args in [
            vec!["status", id],
            vec!["stop", id],
            vec!["start", id],
            vec!["terminate", id],
            vec!["update-task", "--id", id, "--action", "terminate"],
            vec!["errors", id],
            vec!["output", id],
            vec!["wait", id],
            vec!["watch", id],
            vec!["revert", id],
            vec!["revert", "--dry-run", id],
            vec!["terminate", "--dry-run", id],
        ] {
            let out = nobody.jobctl(&args);
            assert_eq!(out.code, Some(1), "nobody ran `{}`: {out}", args.join(" "));
            assert!(out.stderr.contains("permission_denied"), "{out}");
            assert!(out.stdout.is_empty(), "leaked output: {out}");
        }
    }
    // An id that does not exist is still id_doesn't_exist, not a permission matter.
    nobody
        .jobctl(&["status", "root-baselineCSV-1-1"])
        .refused("id_doesn't_exist");

    // root's jobs are untouched: still paused where they were, still complete.
    let after = d.status_json(&paused);
    assert_eq!(after["state"], "paused", "{after}");
    assert_eq!(after["processed"], before["processed"]);
    assert_eq!(d.status_json(&export)["state"], "completed");
    assert!(!d.output(&export).is_empty());

    // root sees nobody's job, with its owner, and may control nobody's jobs.
    let all = d.jobctl(&["--json", "status"]).ok().json();
    let theirs = all
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["id"] == mine.as_str())
        .unwrap_or_else(|| panic!("root does not see {mine}: {all}"))
        .clone();
    assert_eq!(theirs["owner"], "nobody");
    assert_eq!(theirs["owner_uid"], NOBODY);
    assert_eq!(d.status_json(&mine)["state"], "completed");
    assert!(d.errors(&mine).is_empty());

    let out = nobody
        .jobctl_stdin(
            &["-q", "upload", "-", "--rate", &SLOW_RATE.to_string()],
            &slow_baseline(2).bytes(),
        )
        .ok();
    let slow = bare_id(&out);
    d.wait_processed(&slow, MID_RUN);
    d.stop(&slow);
    d.control("terminate", &slow);
    assert_eq!(d.status_json(&slow)["state"], "terminated");
    // ... and nobody sees what root did to it.
    let s = nobody.jobctl(&["--json", "status", &slow]).ok().json();
    assert_eq!(s["state"], "terminated", "{s}");

    // A prune by nobody forgets nobody's finished jobs only; root's stay.
    assert_eq!(nobody.jobctl(&["-q", "prune"]).ok().stdout_str(), "2\n");
    nobody
        .jobctl(&["status", &mine])
        .refused("id_doesn't_exist");
    for id in &root_jobs {
        d.status_json(id);
    }
    // root's prune takes every user's finished jobs: root's two finished ones.
    assert_eq!(d.jobctl(&["-q", "prune"]).ok().stdout_str(), "2\n");
    assert_eq!(d.status_json(&paused)["state"], "paused");
}

fn an_export_holds_only_the_callers_records(b: Backend) {
    if skip_unless_root("an_export_holds_only_the_callers_records") {
        return;
    }
    let (d, nobody) = daemon_and_nobody(b);
    let first = Date::new(2024, 3, 1);
    let last = Date::new(2024, 3, 5);
    let roots = gen_baseline(11, &["date", "name", "value"], 60, first, 5);
    let nobodys = gen_baseline(12, &["date", "name", "score"], 45, first, 5);

    let r = d.upload(&roots.bytes(), None);
    d.wait_completed(&r);
    let n = bare_id(
        &nobody
            .jobctl_stdin(&["-q", "upload", "-", "--wait"], &nobodys.bytes())
            .ok(),
    );
    assert_eq!(d.status_json(&n)["processed"], 45);

    let (from, to) = (first.to_string(), last.to_string());
    let out = nobody
        .jobctl(&["-q", "export", "--from", &from, "--to", &to, "--wait"])
        .ok();
    let nobody_export = bare_id(&out);
    let got = nobody.jobctl(&["output", &nobody_export]).ok().stdout;
    jobd_tests::assert_bytes_eq(
        "nobody's export",
        &got,
        &expected_export(&[&nobodys], first, last),
    );

    // root's own export, too, holds root's records only.
    let root_export = d.export(&from, &to, None);
    d.wait_completed(&root_export);
    jobd_tests::assert_bytes_eq(
        "root's export",
        &d.output(&root_export),
        &expected_export(&[&roots], first, last),
    );
    // root may fetch nobody's export: the same bytes nobody got.
    assert_eq!(d.output(&nobody_export), got);
}

/// jobd as root with umask 000, so that only its own choice of modes protects files.
fn start_with_open_umask(dir: &Path) -> Child {
    let log = File::create(dir.join("jobd.log")).expect("log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(&bins().jobd)
        .arg("--socket")
        .arg(dir.join("run/jobd.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env_remove("JOBD_SOCKET")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn jobd");
    let socket = dir.join("run/jobd.sock");
    poll(
        "the daemon's first pong",
        DAEMON_TIMEOUT,
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "jobd exited ({status}): {}",
                    fs::read_to_string(dir.join("jobd.log")).unwrap_or_default()
                );
            }
            (jobctl_at(&socket, &["ping"]).code == Some(0)).then_some(())
        },
        || fs::read_to_string(dir.join("jobd.log")).unwrap_or_default(),
    );
    child
}

struct KillChild(Child);

impl Drop for KillChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn state_spool_and_export_files_are_private_whatever_the_umask() {
    if skip_unless_root("state_spool_and_export_files_are_private_whatever_the_umask") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("jobd-sec")
        .tempdir()
        .expect("temporary directory");
    let dir = tmp.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let _daemon = KillChild(start_with_open_umask(dir));
    let socket = dir.join("run/jobd.sock");
    let state = dir.join("state");
    let jobctl_stdin = |args: &[&str], stdin: &[u8]| {
        let mut cmd = Command::new(&bins().jobctl);
        cmd.env_remove("JOBD_SOCKET")
            .arg("--socket")
            .arg(&socket)
            .args(args);
        run_with_timeout(cmd, Some(stdin.to_vec()), DAEMON_TIMEOUT).ok()
    };

    // A paused upload keeps its spool file; a completed export has its file.
    let rate = SLOW_RATE.to_string();
    let slow = bare_id(&jobctl_stdin(
        &["-q", "upload", "-", "--rate", &rate],
        &slow_baseline(3).bytes(),
    ));
    jobctl_at(&socket, &["stop", &slow]).ok();
    jobctl_stdin(&["-q", "upload", "-", "--wait"], b"date,v\n2024-02-01,1\n");
    let export = bare_id(&jobctl_at(
        &socket,
        &[
            "-q",
            "export",
            "--from",
            "2024-02-01",
            "--to",
            "2024-02-01",
            "--wait",
        ],
    ));

    assert_eq!(mode_of(&state), 0o700, "state directory");
    assert_eq!(mode_of(&socket), 0o600, "socket without a group");
    assert_eq!(
        mode_of(socket.parent().expect("dir")),
        0o700,
        "socket directory"
    );
    // Every directory is 0700; spool and export files are 0600. (The SQLite files
    // jobd.db* follow the umask, 0644 by default: only their 0700 directory keeps
    // them private.)
    let mut files = Vec::new();
    let mut stack = vec![state.clone()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).expect("read_dir") {
            let path = e.expect("entry").path();
            let mode = mode_of(&path);
            let rel = path
                .strip_prefix(&state)
                .expect("under state")
                .to_path_buf();
            if path.is_dir() {
                assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
                stack.push(path);
            } else {
                files.push((rel.display().to_string(), mode));
            }
        }
    }
    let private: Vec<&(String, u32)> = files
        .iter()
        .filter(|(n, _)| n.starts_with("spool/") || n.starts_with("exports/"))
        .collect();
    for (name, mode) in &private {
        assert_eq!(*mode, 0o600, "{name} is {mode:o}");
    }
    assert!(
        private.iter().any(|(n, _)| n.starts_with("spool/")),
        "no spool file of the paused job: {files:?}"
    );
    assert!(
        private
            .iter()
            .any(|(n, _)| n == &format!("exports/{export}.csv")),
        "no export file: {files:?}"
    );
    assert!(files.iter().any(|(n, _)| n == "jobd.db"), "{files:?}");

    // And nobody indeed can read none of it.
    let nobody = AsUser {
        uid: NOBODY,
        gid: NOGROUP,
        jobctl: bins().jobctl.clone(),
        socket: socket.clone(),
    };
    for path in [state.join("jobd.db"), state.join("exports")] {
        let mut cmd = nobody.command(Path::new("ls"), &["-l"]);
        cmd.arg(&path);
        let out = run_with_timeout(cmd, None, DAEMON_TIMEOUT);
        assert_ne!(out.code, Some(0), "nobody read {}: {out}", path.display());
        assert!(out.stderr.contains("ermission denied"), "{out}");
    }
}

/// `jobd --daemon --socket-group G` with the socket and the pid file in one new
/// directory (the layout of root's defaults, /run/jobd/): members of G must get in.
/// Ignored until the daemon is fixed: daemon mode creates the pid file's directory
/// 0700 before binding, so the socket directory never gets the group's 0750.
#[test]
fn daemon_mode_with_a_socket_group_lets_the_group_in() {
    if skip_unless_root("daemon_mode_with_a_socket_group_lets_the_group_in") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("jobd-sec")
        .tempdir()
        .expect("temporary directory");
    let dir = tmp.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = dir.join("run");
    let mut guard = jobd_tests::service::KillOnDrop::default();
    guard.watch_pid_file(&run.join("jobd.pid"));
    let out = jobd_tests::service::run_jobd(&[
        "--daemon",
        "--socket-group",
        "nogroup",
        "--socket",
        run.join("jobd.sock").to_str().expect("UTF-8"),
        "--pid-file",
        run.join("jobd.pid").to_str().expect("UTF-8"),
        "--state-dir",
        dir.join("state").to_str().expect("UTF-8"),
        "--log-dir",
        dir.join("log").to_str().expect("UTF-8"),
    ])
    .ok();
    let pid = jobd_tests::service::wait_pid_file(&run.join("jobd.pid"));
    guard.watch(pid);
    let jobctl = dir.join("bin/jobctl");
    install_exe(&bins().jobctl, &jobctl);
    let nobody = AsUser {
        uid: NOBODY,
        gid: NOGROUP,
        jobctl,
        socket: run.join("jobd.sock"),
    };
    let pong = nobody.jobctl(&["ping"]);
    assert_eq!(
        (mode_of(&run), fs::metadata(&run).expect("stat").gid()),
        (0o750, NOGROUP),
        "socket directory; {out}"
    );
    assert_eq!(pong.code, Some(0), "{pong}");
    jobd_tests::service::signal_and_wait_gone(pid, nix::sys::signal::Signal::SIGTERM, String::new);
}

both_stores!(
    another_user_can_neither_see_nor_control_a_job_and_root_can,
    an_export_holds_only_the_callers_records,
);
