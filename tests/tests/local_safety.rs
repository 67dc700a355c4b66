//! Local safety, with real users through `setpriv`: another user can neither squat
//! the fallback socket directory nor get a byte from a client through a socket
//! planted there; jobd refuses socket directories others could use to replace its
//! socket; the packaged layout (daemon as its own user, socket 0660 in a 0750
//! directory, client in the group) still works. And one state directory serves one
//! daemon: in the foreground, in daemon mode and under socket activation.
//!
//! The two-user tests need root (CI runs as root); as another user they say so and
//! pass. Their victims are made-up uids (no passwd entry needed) derived from the
//! test process's pid, so that parallel runs never share a `/tmp/jobd-<uid>`.

use jobd_tests::daemon::DAEMON_TIMEOUT;
use jobd_tests::http::Shim;
use jobd_tests::service::{
    install_exe, is_root, jobctl_at, jobd_cmd, mode_of, poll, process_comm, read_logs, run_jobd,
    signal_and_wait_gone, wait_pid_file, AsUser, KillOnDrop, NOBODY, NOGROUP,
};
use jobd_tests::{
    assert_baseline_exact, bare_id, bins, run_with_timeout, slow_baseline, Daemon, Out, MID_RUN,
    SLOW_RATE, SLOW_ROWS,
};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped: needs root to run other uids (CI runs as root)");
    true
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A uid nobody uses, unique to this test process and `n`.
fn made_up_uid(n: u32) -> u32 {
    1_000_000 + std::process::id() * 10 + n
}

/// A temporary directory every user may traverse, with the binaries in `bin/`.
struct Place {
    tmp: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        let tmp = tempfile::Builder::new()
            .prefix("jobd-ls")
            .tempdir()
            .expect("temporary directory");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let place = Place { tmp };
        install_exe(&bins().jobd, &place.bin("jobd"));
        install_exe(&bins().jobctl, &place.bin("jobctl"));
        install_exe(
            Path::new(env!("CARGO_BIN_EXE_squatter")),
            &place.bin("squatter"),
        );
        place
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.tmp.path().join("bin").join(name)
    }

    /// A new directory `name` owned by `uid:gid` with `mode`.
    fn dir(&self, name: &str, uid: u32, gid: u32, mode: u32) -> PathBuf {
        let dir = self.tmp.path().join(name);
        fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
        dir
    }

    /// `PROGRAM ARGS` as `uid:gid`, with no supplementary groups and an environment
    /// without a runtime directory (as under cron, su or ssh without pam_systemd).
    fn as_user(&self, uid: u32, gid: u32, program: &Path, args: &[&str]) -> Command {
        let user = AsUser {
            uid,
            gid,
            jobctl: self.bin("jobctl"),
            socket: PathBuf::new(),
        };
        let mut cmd = user.command(program, args);
        for var in [
            "XDG_RUNTIME_DIR",
            "XDG_STATE_HOME",
            "XDG_CONFIG_HOME",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self.path());
        cmd
    }

    fn run_as(&self, uid: u32, gid: u32, program: &Path, args: &[&str]) -> Out {
        run_with_timeout(self.as_user(uid, gid, program, args), None, DAEMON_TIMEOUT)
    }
}

/// `/tmp/jobd-<uid>`, the fallback socket directory of `uid`; removed when dropped.
struct Fallback {
    dir: PathBuf,
}

impl Fallback {
    fn new(uid: u32) -> Fallback {
        let dir = PathBuf::from(format!("/tmp/jobd-{uid}"));
        let _ = fs::remove_dir_all(&dir);
        Fallback { dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("jobd.sock")
    }

    /// nobody creates the directory first, with `mode`.
    fn squat(&self, place: &Place, mode: u32) {
        let _ = fs::remove_dir_all(&self.dir);
        let mode = format!("{mode:o}");
        place
            .run_as(
                NOBODY,
                NOGROUP,
                Path::new("mkdir"),
                &["-m", &mode, s(&self.dir)],
            )
            .ok();
        assert_eq!(fs::metadata(&self.dir).expect("stat").uid(), NOBODY);
    }
}

impl Drop for Fallback {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Kills and reaps a child when dropped.
struct KillChild(Child);

impl Drop for KillChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout and stderr to `log`.
fn spawn_logged(mut cmd: Command, log: &Path) -> KillChild {
    let file = File::create(log).expect("log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .spawn()
        .expect("spawn");
    KillChild(child)
}

/// Polls `ready` until it holds; fails early, with the log, if `child` exits.
#[track_caller]
fn wait_ready(what: &str, child: &mut KillChild, log: &Path, mut ready: impl FnMut() -> bool) {
    let text = || fs::read_to_string(log).unwrap_or_default();
    poll(
        what,
        DAEMON_TIMEOUT,
        || {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("exited ({status}) before {what}:\n{}", text());
            }
            ready().then_some(())
        },
        text,
    );
}

/// A squatter run by nobody at `socket`; its report is in `log`.
struct Squatter {
    _child: KillChild,
    log: PathBuf,
}

impl Squatter {
    fn start(place: &Place, socket: &Path, name: &str) -> Squatter {
        let log = place.path().join(format!("{name}.log"));
        let cmd = place.as_user(NOBODY, NOGROUP, &place.bin("squatter"), &[s(socket)]);
        let mut child = spawn_logged(cmd, &log);
        wait_ready("the squatter's socket", &mut child, &log, || {
            fs::read_to_string(&log).is_ok_and(|t| t.contains("listening"))
        });
        Squatter { _child: child, log }
    }

    /// Connections accepted, and the bytes each closed one received.
    fn report(&self) -> (usize, Vec<usize>) {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let accepted = text.lines().filter(|l| *l == "accepted").count();
        let closed = text
            .lines()
            .filter_map(|l| l.strip_prefix("closed ")?.parse().ok())
            .collect();
        (accepted, closed)
    }

    /// Waits until `n` connections were accepted and all of them closed; asserts
    /// that not one byte reached the squatter.
    #[track_caller]
    fn assert_nothing_received(&self, at_least: usize) {
        let closed = poll(
            &format!("{at_least} closed connections at the squatter"),
            DAEMON_TIMEOUT,
            || {
                let (accepted, closed) = self.report();
                (accepted >= at_least && closed.len() == accepted).then_some(closed)
            },
            || fs::read_to_string(&self.log).unwrap_or_default(),
        );
        assert!(
            closed.iter().all(|n| *n == 0),
            "bytes reached the planted socket: {closed:?}"
        );
    }
}

#[test]
fn jobd_refuses_a_squatted_fallback_directory_and_makes_its_own_private() {
    if skip_unless_root("jobd_refuses_a_squatted_fallback_directory_and_makes_its_own_private") {
        return;
    }
    let place = Place::new();
    let victim = made_up_uid(1);
    let state = place.dir("state", victim, victim, 0o700);
    let fallback = Fallback::new(victim);
    let jobd = place.bin("jobd");
    let jobd_args = ["--state-dir", s(&state)];

    // Writable by all, or merely owned by another user: both are refused, at once.
    for mode in [0o777, 0o755] {
        fallback.squat(&place, mode);
        let out = place.run_as(victim, victim, &jobd, &jobd_args);
        assert_eq!(out.code, Some(1), "mode {mode:o}: {out}");
        for needle in [
            format!("{}", fallback.socket().display()),
            format!(
                "{} is owned by uid {NOBODY} (nobody)",
                fallback.dir.display()
            ),
            "--socket".to_string(),
        ] {
            assert!(out.stderr.contains(&needle), "{needle:?} missing: {out}");
        }
        let left: Vec<_> = fs::read_dir(&fallback.dir).expect("read_dir").collect();
        assert!(
            left.is_empty(),
            "jobd left {left:?} in the squatted directory"
        );
    }

    // Unsquatted, jobd makes the directory itself, 0700, and its client finds it.
    fs::remove_dir_all(&fallback.dir).expect("remove the squatted directory");
    let log = place.path().join("victim-jobd.log");
    let mut daemon = spawn_logged(place.as_user(victim, victim, &jobd, &jobd_args), &log);
    let jobctl = place.bin("jobctl");
    wait_ready("the victim's daemon", &mut daemon, &log, || {
        place.run_as(victim, victim, &jobctl, &["ping"]).code == Some(0)
    });
    assert_eq!(mode_of(&fallback.dir), 0o700);
    assert_eq!(fs::metadata(&fallback.dir).expect("stat").uid(), victim);
    assert_eq!(mode_of(&fallback.socket()), 0o600);
}

#[test]
fn no_client_sends_a_byte_to_a_socket_another_user_planted() {
    if skip_unless_root("no_client_sends_a_byte_to_a_socket_another_user_planted") {
        return;
    }
    let place = Place::new();
    let victim = made_up_uid(2);
    let fallback = Fallback::new(victim);
    let socket = fallback.socket();
    let jobctl = place.bin("jobctl");
    let path = socket.display().to_string();

    // The planted directory open to all, or private to nobody: both are refused.
    for (round, mode) in [0o777, 0o755].into_iter().enumerate() {
        fallback.squat(&place, mode);
        let squatter = Squatter::start(&place, &socket, &format!("squatter-{round}"));
        let refusals = [
            // The victim's jobctl by its default path (no XDG_RUNTIME_DIR), and by flag.
            place.run_as(victim, victim, &jobctl, &["ping"]),
            place.run_as(victim, victim, &jobctl, &["status"]),
            run_with_timeout(
                place.as_user(victim, victim, &jobctl, &["upload", "-"]),
                Some(b"date,v\n2024-01-01,secret\n".to_vec()),
                DAEMON_TIMEOUT,
            ),
            place.run_as(victim, victim, &jobctl, &["--socket", &path, "ping"]),
            // root's jobctl does not trust nobody's socket there either.
            jobctl_at(&socket, &["ping"]),
        ];
        for out in &refusals {
            assert_eq!(out.code, Some(3), "mode {mode:o}: {out}");
            for needle in [
                format!("refusing to talk to the daemon at {path}"),
                format!("it runs as uid {NOBODY}"),
                format!(
                    "{} belongs to uid {NOBODY} in /tmp, where anyone may create names",
                    fallback.dir.display()
                ),
                "nothing was sent".to_string(),
            ] {
                assert!(out.stderr.contains(&needle), "{needle:?} missing: {out}");
            }
            assert!(out.stdout.is_empty(), "{out}");
        }
        squatter.assert_nothing_received(refusals.len());
    }

    // jobd-http (here as root) answers 503, says why in its log, and sends nothing.
    fallback.squat(&place, 0o755);
    let squatter = Squatter::start(&place, &socket, "squatter-http");
    let shim = Shim::start_at(&socket, &place.path().join("http"), &[]);
    let health = shim.get("/healthz");
    assert_eq!(health.status, 503, "{health:?}");
    let update = shim.get("/updateTask?id=root-bulkTeam-1-1&action=stop");
    assert_eq!(update.status, 503, "{update:?}");
    let upload = shim.upload("/uploadCSV", "a.csv", b"date,v\n2024-01-01,secret\n");
    assert_eq!(upload.status, 503, "{upload:?}");
    let logs = shim.logs();
    assert!(
        logs.contains(&format!("refusing to talk to the daemon at {path}")),
        "{logs}"
    );
    drop(shim);
    squatter.assert_nothing_received(3);
}

#[test]
fn jobd_refuses_a_socket_directory_others_could_use_to_replace_its_socket() {
    if skip_unless_root("jobd_refuses_a_socket_directory_others_could_use_to_replace_its_socket") {
        return;
    }
    let place = Place::new();
    for (name, uid, mode, why) in [
        (
            "open",
            0,
            0o777,
            "is writable by others (mode 0777) without the sticky bit",
        ),
        (
            "group",
            0,
            0o770,
            "is writable by others (mode 0770) without the sticky bit",
        ),
        ("foreign", NOBODY, 0o755, "is owned by uid 65534 (nobody)"),
    ] {
        let dir = place.dir(name, uid, NOGROUP, mode);
        let socket = dir.join("jobd.sock");
        let state = place.path().join(format!("state-{name}"));
        let out = run_jobd(&["--socket", s(&socket), "--state-dir", s(&state)]);
        assert_eq!(out.code, Some(1), "{name}: {out}");
        let needle = format!("the socket directory {} {why}", dir.display());
        assert!(out.stderr.contains(&needle), "{needle:?} missing: {out}");
        assert!(!socket.exists(), "{name}: the socket was created");
    }
    // With the sticky bit (as /tmp), others cannot remove the socket: accepted.
    let dir = place.dir("sticky", 0, 0, 0o1777);
    let socket = dir.join("jobd.sock");
    let log = place.path().join("sticky.log");
    let cmd = jobd_cmd(&[
        "--socket",
        s(&socket),
        "--state-dir",
        s(&place.path().join("state-sticky")),
    ]);
    let mut daemon = spawn_logged(cmd, &log);
    wait_ready("a daemon in a sticky directory", &mut daemon, &log, || {
        jobctl_at(&socket, &["ping"]).code == Some(0)
    });
}

#[test]
fn the_packaged_layout_still_works() {
    if skip_unless_root("the_packaged_layout_still_works") {
        return;
    }
    // As tmpfiles.d and the service do: the daemon runs as its own user ("jobd",
    // here a made-up uid in group nogroup), in a 0750 socket directory of its own.
    let place = Place::new();
    let service = made_up_uid(4);
    let run = place.dir("run", service, NOGROUP, 0o750);
    let state = place.dir("state", service, NOGROUP, 0o700);
    let socket = run.join("jobd.sock");
    let args = [
        "--socket",
        s(&socket),
        "--socket-group",
        "nogroup",
        "--state-dir",
        s(&state),
    ];
    let log = place.path().join("service.log");
    let cmd = place.as_user(service, NOGROUP, &place.bin("jobd"), &args);
    let mut daemon = spawn_logged(cmd, &log);
    // A client in the group: nobody, whose gid is nogroup.
    let member = AsUser {
        uid: NOBODY,
        gid: NOGROUP,
        jobctl: place.bin("jobctl"),
        socket: socket.clone(),
    };
    wait_ready("the service's first pong", &mut daemon, &log, || {
        member.jobctl(&["ping"]).code == Some(0)
    });
    let meta = fs::metadata(&socket).expect("stat the socket");
    assert_eq!(
        (meta.uid(), meta.gid(), mode_of(&socket)),
        (service, NOGROUP, 0o660)
    );
    assert_eq!(mode_of(&run), 0o750);
    let pong = member.jobctl(&["ping"]).ok();
    assert!(pong.stdout_str().contains("user nobody"), "{pong}");
    let out = member
        .jobctl_stdin(&["-q", "upload", "-", "--wait"], b"date,v\n2024-01-01,1\n")
        .ok();
    assert!(bare_id(&out).starts_with("nobody-baselineCSV-"), "{out}");
    // root trusts it too.
    jobctl_at(&socket, &["ping"]).ok();
}

/// The refusal of a second daemon: exit 1, naming the pid that holds the lock.
#[track_caller]
fn assert_busy(out: &Out, holder: u32) {
    assert_eq!(
        out.code,
        Some(1),
        "a second daemon on a busy state directory: {out}"
    );
    for needle in [
        "is in use by another jobd".to_string(),
        format!("pid {holder}"),
        "jobd.lock".to_string(),
    ] {
        assert!(out.stderr.contains(&needle), "{needle:?} missing: {out}");
    }
}

#[test]
fn a_second_daemon_on_a_busy_state_directory_is_refused_and_the_first_unharmed() {
    let mut d = Daemon::start();
    let rows = slow_baseline(15);
    let id = d.upload(&rows.bytes(), Some(SLOW_RATE));
    d.wait_processed(&id, MID_RUN);

    let other = d.dir().join("other/jobd.sock");
    let state = d.state_dir.clone();
    let out = run_jobd(&["--socket", s(&other), "--state-dir", s(&state)]);
    assert_busy(&out, d.pid());
    assert!(!other.exists(), "the refused daemon bound a socket");

    // The first goes on with its job: every row exactly once.
    let status = d.wait_completed(&id);
    assert_eq!(status["processed"], SLOW_ROWS as u64, "{status}");
    assert_baseline_exact(&d, &id, &rows.records);
    d.jobctl(&["ping"]).ok();

    // SIGKILL: the kernel releases the lock, and a new daemon starts at once.
    d.sigkill();
    d.restart();
    let lock = fs::read_to_string(state.join("jobd.lock")).expect("read the lock file");
    assert_eq!(lock, format!("{}\n", d.pid()));
    assert_eq!(d.status_json(&id)["state"], "completed");
}

/// Polls until the kernel has released the state directory's lock. A killed daemon
/// that is not our child cannot be reaped to know: its main thread may already be a
/// zombie while its other threads, which share its open files, still exit.
fn wait_lock_released(state: &Path) {
    let path = state.join("jobd.lock");
    poll(
        "the release of the state directory's lock",
        DAEMON_TIMEOUT,
        || {
            let file = File::open(&path).ok()?;
            Flock::lock(file, FlockArg::LockExclusiveNonblock)
                .ok()
                .map(drop)
        },
        || format!("{path:?} holds {:?}", fs::read_to_string(&path)),
    );
}

#[test]
fn daemon_mode_keeps_the_lock_and_its_commits() {
    let place = Place::new();
    let dir = place.path();
    let (socket, state, logs) = (dir.join("a/jobd.sock"), dir.join("state"), dir.join("log"));
    let daemon_args = |socket: &Path, pid_file: &Path| -> Vec<String> {
        [
            "--daemon",
            "--socket",
            s(socket),
            "--pid-file",
            s(pid_file),
            "--state-dir",
            s(&state),
            "--log-dir",
            s(&logs),
        ]
        .map(str::to_string)
        .to_vec()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_jobd(&args)
    };
    let mut guard = KillOnDrop::default();
    let first_pid_file = dir.join("a/jobd.pid");
    guard.watch_pid_file(&first_pid_file);
    run(daemon_args(&socket, &first_pid_file)).ok();
    let pid = wait_pid_file(&first_pid_file);
    guard.watch(pid);
    // The detached daemon holds the lock, not the launcher that took it.
    let lock = fs::read_to_string(state.join("jobd.lock")).expect("read the lock file");
    assert_eq!(lock, format!("{pid}\n"));

    let mut cmd = Command::new(&bins().jobctl);
    cmd.env_remove("JOBD_SOCKET")
        .arg("--socket")
        .arg(&socket)
        .args(["-q", "upload", "-", "--wait"]);
    let out = run_with_timeout(
        cmd,
        Some(b"date,v\n2024-01-01,1\n".to_vec()),
        DAEMON_TIMEOUT,
    );
    let id = bare_id(&out.ok());

    // A second daemon, detached or not, is refused naming the daemon's pid.
    let b = dir.join("b/jobd.sock");
    let b_pid_file = dir.join("b/jobd.pid");
    guard.watch_pid_file(&b_pid_file);
    assert_busy(&run(daemon_args(&b, &b_pid_file)), pid as u32);
    assert!(
        !b.exists() && !b_pid_file.exists(),
        "the refused daemon left files"
    );
    assert_busy(
        &run_jobd(&["--socket", s(&b), "--state-dir", s(&state)]),
        pid as u32,
    );
    jobctl_at(&socket, &["ping"]).ok();

    // SIGKILL; a new daemon starts on the same directory, and what the first
    // committed is there. (Another pid file: a killed daemon nobody reaps stays a
    // zombie that its pid file would still name.)
    signal_and_wait_gone(pid, Signal::SIGKILL, || read_logs(&logs, "jobd.log"));
    wait_lock_released(&state);
    let second_pid_file = dir.join("a/jobd-2.pid");
    guard.watch_pid_file(&second_pid_file);
    run(daemon_args(&socket, &second_pid_file)).ok();
    let pid = wait_pid_file(&second_pid_file);
    guard.watch(pid);
    let status = jobctl_at(&socket, &["--json", "status", &id]).ok().json();
    assert_eq!(status["state"], "completed", "{status}");
    signal_and_wait_gone(pid, Signal::SIGTERM, || read_logs(&logs, "jobd.log"));
}

#[test]
fn socket_activation_holds_the_lock() {
    let place = Place::new();
    let dir = place.path();
    let socket = dir.join("activated.sock");
    let state = dir.join("state");
    let log = dir.join("activate.log");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(&socket).arg(&bins().jobd).args([
        "--state-dir",
        s(&state),
        "--socket",
        s(&dir.join("unused.sock")),
    ]);
    for var in [
        "JOBD_SOCKET",
        "JOBD_STATE_DIR",
        "LISTEN_FDS",
        "LISTEN_PID",
        "NOTIFY_SOCKET",
    ] {
        cmd.env_remove(var);
    }
    let mut child = spawn_logged(cmd, &log);
    wait_ready("the activation socket", &mut child, &log, || {
        socket.exists()
    });
    // The first connection starts jobd (execed in the same process).
    jobctl_at(&socket, &["ping"]).ok();
    let pid = child.0.id();
    assert_eq!(process_comm(pid as i32).as_deref(), Some("jobd"));

    let other = dir.join("other.sock");
    assert_busy(
        &run_jobd(&["--socket", s(&other), "--state-dir", s(&state)]),
        pid,
    );
    jobctl_at(&socket, &["ping"]).ok();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = child.0.wait().expect("wait");
    assert!(
        status.success(),
        "jobd exited with {status}: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}
