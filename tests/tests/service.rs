//! jobd as a service: daemon mode (detach, pid file, log file, SIGHUP, SIGTERM),
//! the configuration file and its precedence, systemd socket activation and
//! readiness for real (no systemd as PID 1 needed), the packaged units, users and
//! directories checked with systemd's own tools, and `jobctl completions`.

use jobd_tests::daemon::DAEMON_TIMEOUT;
use jobd_tests::service::{
    effective_config, install_exe, is_root, jobctl_at, jobd_cmd, mode_of, packaging_dir, poll,
    process_alive, process_comm, process_session, read_logs, read_pid_file, run_jobd,
    signal_and_wait_gone, unit_value, unit_verify_root, wait_pid_file, KillOnDrop, NOBODY, NOGROUP,
};
use jobd_tests::{bins, run_with_timeout, Out};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("jobd-svc")
        .tempdir()
        .expect("temporary directory")
}

/// setpriv(1) by absolute path (a cleared environment has no PATH).
fn setpriv() -> &'static str {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("setpriv (package util-linux)")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Paths of one daemon-mode instance under a temporary directory.
struct Layout {
    socket: PathBuf,
    pid_file: PathBuf,
    state: PathBuf,
    logs: PathBuf,
}

impl Layout {
    fn new(dir: &Path, name: &str) -> Layout {
        Layout {
            socket: dir.join(name).join("run/jobd.sock"),
            pid_file: dir.join(name).join("run/jobd.pid"),
            state: dir.join(name).join("state"),
            logs: dir.join(name).join("log"),
        }
    }

    fn daemon_args(&self) -> Vec<&str> {
        vec![
            "--daemon",
            "--socket",
            s(&self.socket),
            "--state-dir",
            s(&self.state),
            "--log-dir",
            s(&self.logs),
            "--pid-file",
            s(&self.pid_file),
        ]
    }

    fn logs(&self) -> String {
        read_logs(&self.logs, "jobd.log")
    }
}

#[test]
fn daemon_mode_detaches_writes_its_pid_file_and_logs_and_cleans_up_on_sigterm() {
    let dir = tempdir();
    let a = Layout::new(dir.path(), "a");
    let mut guard = KillOnDrop::default();
    guard.watch_pid_file(&a.pid_file);

    // The launcher returns (exit 0) once the daemon is detached.
    let out = run_jobd(&a.daemon_args()).ok();
    assert!(out.stdout.is_empty(), "daemon mode printed: {out}");
    let pid = wait_pid_file(&a.pid_file);
    guard.watch(pid);
    assert!(
        process_alive(pid),
        "pid {pid} of the pid file is not running"
    );
    assert_eq!(process_comm(pid).as_deref(), Some("jobd"));
    let own_session = process_session(std::process::id() as i32);
    assert_ne!(
        process_session(pid),
        own_session,
        "the daemon is still in the launcher's session"
    );

    // The socket is bound before the launcher returns: the first ping is answered.
    let pong = jobctl_at(&a.socket, &["ping"]).ok();
    assert!(pong.stdout_str().contains("pong"), "{pong}");
    assert_eq!(mode_of(&a.socket), 0o600, "socket mode");
    assert_eq!(mode_of(a.socket.parent().expect("dir")), 0o700);
    assert_eq!(mode_of(&a.state), 0o700, "state directory mode");

    // It logs to a daily-rolling file in the log directory.
    poll(
        "\"jobd ready\" in the log file",
        DAEMON_TIMEOUT,
        || a.logs().contains("jobd ready").then_some(()),
        || {
            format!(
                "log dir holds: {:?}",
                fs::read_dir(&a.logs).map(|d| d.count())
            )
        },
    );
    let names: Vec<String> = fs::read_dir(&a.logs)
        .expect("log dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("jobd.log.")),
        "log files: {names:?}"
    );

    // A second daemon with the same pid file refuses, before touching anything.
    let b = Layout::new(dir.path(), "b");
    let mut second = b.daemon_args();
    let pos = second
        .iter()
        .position(|x| *x == "--pid-file")
        .expect("flag")
        + 1;
    second[pos] = s(&a.pid_file);
    let out = run_jobd(&second);
    assert_eq!(out.code, Some(1), "second daemon, same pid file: {out}");
    assert!(
        out.stderr.contains("already running") && out.stderr.contains(&pid.to_string()),
        "the refusal names the running daemon: {out}"
    );
    assert!(!b.socket.exists(), "the refused daemon created its socket");
    assert_eq!(read_pid_file(&a.pid_file), pid, "the pid file was changed");

    // A second daemon with another pid file but the same socket refuses too.
    let mut third = b.daemon_args();
    let pos = third.iter().position(|x| *x == "--socket").expect("flag") + 1;
    third[pos] = s(&a.socket);
    let out = run_jobd(&third);
    assert_eq!(out.code, Some(1), "second daemon, same socket: {out}");
    assert!(out.stderr.contains("already listening"), "{out}");
    assert!(!b.pid_file.exists(), "the refused daemon wrote a pid file");
    jobctl_at(&a.socket, &["ping"]).ok();

    // SIGTERM: clean exit, socket and pid file removed.
    signal_and_wait_gone(pid, Signal::SIGTERM, || a.logs());
    assert!(!a.socket.exists(), "socket left behind");
    assert!(!a.pid_file.exists(), "pid file left behind");
    let log = a.logs();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(
        log.contains("checkpointed"),
        "no clean shutdown in the log: {log}"
    );
}

#[test]
fn daemon_mode_replaces_a_stale_pid_file() {
    let dir = tempdir();
    let a = Layout::new(dir.path(), "a");
    let mut guard = KillOnDrop::default();
    guard.watch_pid_file(&a.pid_file);
    // A pid that surely is no jobd: an exited child of ours.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait true");
    fs::create_dir_all(a.pid_file.parent().expect("dir")).expect("run dir");
    fs::write(&a.pid_file, format!("{dead}\n")).expect("stale pid file");

    run_jobd(&a.daemon_args()).ok();
    let pid: i32 = poll(
        "the new daemon's pid in the pid file",
        DAEMON_TIMEOUT,
        || {
            let text = fs::read_to_string(&a.pid_file).ok()?;
            text.trim().parse().ok().filter(|p: &i32| *p as u32 != dead)
        },
        || format!("{:?}", fs::read_to_string(&a.pid_file)),
    );
    guard.watch(pid);
    assert_ne!(pid as u32, dead);
    jobctl_at(&a.socket, &["ping"]).ok();
    signal_and_wait_gone(pid, Signal::SIGTERM, || a.logs());
    assert!(!a.pid_file.exists());
}

#[test]
fn sighup_rereads_the_log_level_from_the_config_file() {
    let dir = tempdir();
    let a = Layout::new(dir.path(), "a");
    let config = dir.path().join("jobd.toml");
    fs::write(&config, "log_level = \"warn\"\n").expect("config");
    let mut args = a.daemon_args();
    args.extend(["--config", s(&config)]);
    let mut guard = KillOnDrop::default();
    guard.watch_pid_file(&a.pid_file);
    run_jobd(&args).ok();
    let pid = wait_pid_file(&a.pid_file);
    guard.watch(pid);
    jobctl_at(&a.socket, &["ping"]).ok();

    fs::write(&config, "log_level = \"info\"\n").expect("config");
    kill(Pid::from_raw(pid), Signal::SIGHUP).expect("SIGHUP");
    poll(
        "the reload line in the log",
        DAEMON_TIMEOUT,
        || a.logs().contains("log level reloaded").then_some(()),
        || a.logs(),
    );
    assert!(process_alive(pid), "SIGHUP stopped the daemon");
    // At "warn", the start-up line (info) was filtered out.
    assert!(!a.logs().contains("jobd ready"), "{}", a.logs());
    signal_and_wait_gone(pid, Signal::SIGTERM, || a.logs());
    assert!(a.logs().contains("checkpointed"), "{}", a.logs());
}

#[test]
fn check_config_shows_flags_over_file_over_defaults() {
    let dir = tempdir();
    let file = dir.path().join("jobd.toml");
    fs::write(
        &file,
        "# a comment\n\
         socket = \"/from/file.sock\"\n\
         state_dir = \"/from/file/state\"\n\
         max_running = 3\n\
         idle_timeout = 42\n\
         log_level = \"debug\"\n",
    )
    .expect("config file");
    let f = s(&file);

    // The file over the defaults.
    let out = run_jobd(&["--config", f, "--check-config"]).ok();
    assert!(
        out.stdout_str().contains(f),
        "names the file it read: {out}"
    );
    let c = effective_config(&out);
    assert_eq!(c["socket"], "/from/file.sock");
    assert_eq!(c["state_dir"], "/from/file/state");
    assert_eq!(c["max_running"], "3");
    assert_eq!(c["idle_timeout"], "42");
    assert_eq!(c["log_level"], "debug");
    assert_eq!(c["max_row_errors"], "100000", "a default");
    assert_eq!(c["max_frame"], "8388608", "a default");

    // Flags over the file.
    let out = run_jobd(&[
        "--config",
        f,
        "--max-running",
        "5",
        "--socket",
        "/from/flag.sock",
        "--check-config",
    ])
    .ok();
    let c = effective_config(&out);
    assert_eq!(c["max_running"], "5");
    assert_eq!(c["socket"], "/from/flag.sock");
    assert_eq!(c["idle_timeout"], "42", "still from the file");

    // Environment over the file.
    let mut cmd = jobd_cmd(&["--config", f, "--check-config"]);
    cmd.env("JOBD_SOCKET", "/from/env.sock")
        .env("JOBD_LOG", "warn");
    let out = run_with_timeout(cmd, None, DAEMON_TIMEOUT).ok();
    let c = effective_config(&out);
    assert_eq!(c["socket"], "/from/env.sock");
    assert_eq!(c["log_level"], "warn");

    // No file settings at all: the defaults.
    let empty = dir.path().join("empty.toml");
    fs::write(&empty, "").expect("empty config");
    let out = run_jobd(&[
        "--config",
        s(&empty),
        "--state-dir",
        "/st",
        "--check-config",
    ])
    .ok();
    let c = effective_config(&out);
    assert_eq!(c["idle_timeout"], "300");
    assert_eq!(c["log_level"], "info");
    assert_eq!(c["state_dir"], "/st");
    if is_root() {
        assert_eq!(c["socket"], "/run/jobd/jobd.sock");
        assert_eq!(c["log_dir"], "/var/log/jobd");
        assert_eq!(c["pid_file"], "/run/jobd/jobd.pid");
    }
    assert!(!c.contains_key("socket_group"), "{c:?}");
}

#[test]
fn check_config_rejects_unknown_keys_and_bad_values_with_exit_2() {
    let dir = tempdir();
    for (n, (text, fragment)) in [
        ("max_runing = 3\n", "max_runing"),
        ("[server]\nsocket = \"/x\"\n", "server"),
        ("max_running = \"many\"\n", "max_running"),
        ("max_running = 0\n", "max_running"),
        ("max_frame = 10\n", "max_frame"),
        ("idle_timeout = -1\n", "idle_timeout"),
        ("log_level = \"[[nonsense\"\n", "log_level"),
        ("state_dir = \"relative/dir\"\n", "state_dir"),
        ("socket = \n", "jobd.toml"),
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.path().join(format!("bad-{n}.jobd.toml"));
        fs::write(&file, text).expect("config file");
        let out = run_jobd(&["--config", s(&file), "--check-config"]);
        let out = out.expect_code(2, Some(fragment));
        assert!(
            out.stdout.is_empty(),
            "printed a config for {text:?}: {out}"
        );
        // The same file stops a real start just as early (the flags keep a start
        // that wrongly went ahead inside the temporary directory).
        if fragment != "state_dir" {
            let state = dir.path().join("state");
            let socket = dir.path().join("run/jobd.sock");
            run_jobd(&[
                "--config",
                s(&file),
                "--state-dir",
                s(&state),
                "--socket",
                s(&socket),
            ])
            .expect_code(2, Some(fragment));
        }
    }
    // An explicit config file must exist.
    let missing = dir.path().join("missing.toml");
    run_jobd(&["--config", s(&missing), "--check-config"]).expect_code(2, Some("missing.toml"));
    // Bad flag values are usage errors too.
    run_jobd(&["--max-running", "lots", "--check-config"]).expect_code(2, Some("max-running"));
    run_jobd(&["--no-such-flag"]).expect_code(2, None);
}

#[test]
fn the_packaged_config_documents_every_key_with_its_default() {
    let shipped = packaging_dir().join("jobd.toml");
    let text = fs::read_to_string(&shipped).expect("packaging/jobd.toml");
    let dir = tempdir();
    let empty = dir.path().join("empty.toml");
    fs::write(&empty, "").expect("empty config");

    // As shipped (all commented out) it is valid and changes nothing.
    let as_shipped = effective_config(&run_jobd(&["--config", s(&shipped), "--check-config"]).ok());
    let defaults = effective_config(&run_jobd(&["--config", s(&empty), "--check-config"]).ok());
    assert_eq!(as_shipped, defaults);

    // Uncommented, every documented key is a real key (unknown keys are refused),
    // and together they are all the keys there are.
    let mut keys = Vec::new();
    let uncommented: String = text
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix('#')?;
            let (k, _) = l.split_once(" = ")?;
            (!k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then(|| {
                keys.push(k.to_string());
                format!("{l}\n")
            })
        })
        .collect();
    let all = dir.path().join("all.toml");
    fs::write(&all, &uncommented).expect("uncommented config");
    let c = effective_config(&run_jobd(&["--config", s(&all), "--check-config"]).ok());
    let mut printed: Vec<String> = c.keys().cloned().collect();
    keys.sort();
    printed.sort();
    assert_eq!(keys, printed, "documented keys vs effective keys");
    // Where the documented value is the default, it is the real default.
    for key in ["max_row_errors", "max_frame", "idle_timeout", "log_level"] {
        assert_eq!(c[key], defaults[key], "documented default of {key}");
    }
    if is_root() {
        for key in ["socket", "state_dir", "log_dir", "pid_file"] {
            assert_eq!(c[key], defaults[key], "documented root default of {key}");
        }
    }
}

#[test]
fn socket_activation_starts_jobd_on_the_first_connection() {
    let dir = tempdir();
    let socket = dir.path().join("activated.sock");
    let state = dir.path().join("state");
    let unused = dir.path().join("unused/jobd.sock");
    let log = dir.path().join("activate.log");
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(&bins().jobd)
        .args(["--state-dir", s(&state), "--socket", s(&unused)])
        .stdin(Stdio::null())
        .stdout(File::create(&log).expect("log"))
        .stderr(File::create(&log).expect("log"))
        .spawn()
        .expect("spawn systemd-socket-activate (package systemd)");
    let pid = child.id() as i32;
    let logs = || fs::read_to_string(&log).unwrap_or_default();
    poll(
        "the activation socket",
        DAEMON_TIMEOUT,
        || socket.exists().then_some(()),
        logs,
    );
    // Nothing started yet: no jobd, no state directory.
    assert_eq!(process_comm(pid).as_deref(), Some("systemd-socket-"));
    assert!(!state.exists(), "jobd ran before any connection");

    // The first connection execs jobd on the passed socket (fd 3), which answers it.
    let pong = jobctl_at(&socket, &["ping"]);
    assert_eq!(pong.code, Some(0), "{pong}\n{}", logs());
    assert_eq!(process_comm(pid).as_deref(), Some("jobd"), "{}", logs());
    assert!(state.is_dir());
    assert!(
        !unused.exists() && !unused.parent().expect("dir").exists(),
        "jobd bound its own socket instead of using fd 3"
    );
    let id = {
        let mut cmd = Command::new(&bins().jobctl);
        cmd.env_remove("JOBD_SOCKET")
            .arg("--socket")
            .arg(&socket)
            .args(["-q", "upload", "-", "--wait"]);
        let out = run_with_timeout(
            cmd,
            Some(b"date,v\n2024-01-01,1\n".to_vec()),
            DAEMON_TIMEOUT,
        )
        .ok();
        jobd_tests::bare_id(&out)
    };
    let status = jobctl_at(&socket, &["--json", "status", &id]).ok().json();
    assert_eq!(status["state"], "completed", "{status}");

    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "jobd exited with {status}:\n{}", logs());
    assert!(logs().contains("activated=true"), "{}", logs());
}

/// Receives datagrams until one holds the line `want`; returns all received.
fn recv_until(sock: &UnixDatagram, want: &str, got: &mut Vec<String>) {
    let mut buf = [0u8; 4096];
    while !got.iter().any(|m| m.lines().any(|l| l == want)) {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {want} (received {got:?}): {e}"));
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

fn readiness_with(dir: &Path, notify_socket: &str, sock: &UnixDatagram) {
    sock.set_read_timeout(Some(DAEMON_TIMEOUT))
        .expect("read timeout");
    let socket = dir.join("run/jobd.sock");
    let log = dir.join("jobd.log");
    let mut child = jobd_cmd(&["--socket", s(&socket), "--state-dir", s(&dir.join("state"))])
        .env("NOTIFY_SOCKET", notify_socket)
        .stdin(Stdio::null())
        .stdout(File::create(&log).expect("log"))
        .stderr(File::create(&log).expect("log"))
        .spawn()
        .expect("spawn jobd");
    let mut got = Vec::new();
    recv_until(sock, "READY=1", &mut got);
    // Ready means ready: the very first ping after READY=1 is answered.
    let pong = jobctl_at(&socket, &["ping"]);
    assert_eq!(
        pong.code,
        Some(0),
        "{pong}\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        !got.iter().any(|m| m.contains("STOPPING=1")),
        "STOPPING before SIGTERM: {got:?}"
    );

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    recv_until(sock, "STOPPING=1", &mut got);
    let status = child.wait().expect("wait jobd");
    assert!(status.success(), "jobd exited with {status}");
    let ready = got.iter().position(|m| m.contains("READY=1"));
    let stopping = got.iter().position(|m| m.contains("STOPPING=1"));
    assert!(ready < stopping, "order of notifications: {got:?}");
}

#[test]
fn readiness_is_notified_with_ready_then_stopping() {
    let dir = tempdir();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    readiness_with(dir.path(), s(&path), &sock);
}

#[test]
fn readiness_reaches_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempdir();
    let name = format!("jobd-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract address");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    readiness_with(dir.path(), &format!("@{name}"), &sock);
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let root = tempdir();
    unit_verify_root(root.path());
    let units = [
        "/usr/lib/systemd/system/jobd.socket",
        "/usr/lib/systemd/system/jobd.service",
        "/usr/lib/systemd/system/jobd-http.service",
    ];
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", s(root.path())))
        .args(units);
    let out = run_with_timeout(cmd, None, DAEMON_TIMEOUT);
    // Unknown keys and bad values are only warnings: the output must be empty.
    assert!(
        out.code == Some(0) && out.stderr.trim().is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {out}"
    );

    // The verification does see missing programs (so the check above means something).
    fs::remove_file(root.path().join("usr/bin/jobd")).expect("remove jobd");
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", s(root.path())))
        .arg(units[1]);
    let out = run_with_timeout(cmd, None, DAEMON_TIMEOUT);
    assert!(
        out.code != Some(0) && out.stderr.contains("/usr/bin/jobd"),
        "{out}"
    );
    install_exe(&bins().jobd, &root.path().join("usr/bin/jobd"));

    // The hardening holds: exposure at most 2.0 of 10 by systemd's own measure.
    for unit in &units[1..] {
        let mut cmd = Command::new("systemd-analyze");
        cmd.args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(format!("--root={}", s(root.path())))
            .arg(unit);
        let out = run_with_timeout(cmd, None, DAEMON_TIMEOUT);
        assert_eq!(out.code, Some(0), "{unit} is not hardened enough: {out}");
    }
}

#[test]
fn the_service_command_line_resolves_to_the_system_paths() {
    // jobd.service runs jobd as an unprivileged user with these settings; the same
    // command line (the config file as packaged) must give the system paths.
    let exec = unit_value("jobd.service", "ExecStart");
    let env = unit_value("jobd.service", "Environment");
    let mut args: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(args.remove(0), "/usr/bin/jobd");
    assert!(
        !args.iter().any(|a| a == "--daemon"),
        "Type=notify must not fork"
    );
    // Run it from a directory every user may read: the service's user is not root.
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let jobd = dir.path().join("jobd");
    install_exe(&bins().jobd, &jobd);
    let config = dir.path().join("jobd.toml");
    fs::copy(packaging_dir().join("jobd.toml"), &config).expect("copy the config");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).expect("chmod");
    for a in args.iter_mut() {
        if a == "/etc/jobd/jobd.toml" {
            *a = s(&config).to_string();
        }
    }
    args.push("--check-config".into());
    let mut cmd = if is_root() {
        // As the service does: not root (so the per-user defaults apply).
        let mut c = Command::new(setpriv());
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOGROUP}"))
            .arg("--clear-groups")
            .arg(&jobd);
        c
    } else {
        Command::new(&jobd)
    };
    cmd.env_clear().args(&args);
    for pair in env.split_whitespace() {
        let (k, v) = pair.split_once('=').expect("Environment=K=V");
        cmd.env(k, v);
    }
    let out = run_with_timeout(cmd, None, DAEMON_TIMEOUT).ok();
    let c = effective_config(&out);
    let socket_unit = unit_value("jobd.socket", "ListenStream");
    assert_eq!(c["socket"], socket_unit, "service and socket unit agree");
    assert_eq!(c["state_dir"], "/var/lib/jobd");
    assert_eq!(c["socket_group"], "jobd");
    assert_eq!(
        unit_value("jobd-http.service", "ExecStart"),
        format!("/usr/bin/jobd-http --socket {socket_unit}")
    );
}

#[test]
fn sysusers_and_tmpfiles_create_the_users_and_directories() {
    let root = tempdir();
    let r = s(root.path());
    fs::create_dir_all(root.path().join("etc")).expect("etc");
    let conf = packaging_dir().join("sysusers.d/jobd.conf");
    let mut cmd = Command::new("systemd-sysusers");
    cmd.arg(format!("--root={r}")).arg(&conf);
    run_with_timeout(cmd, None, DAEMON_TIMEOUT).ok();
    let passwd = fs::read_to_string(root.path().join("etc/passwd")).expect("passwd");
    let group = fs::read_to_string(root.path().join("etc/group")).expect("group");
    let entry = |text: &str, name: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|f| f[0] == name)
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let jobd = entry(&passwd, "jobd");
    let http = entry(&passwd, "jobd-http");
    let jobd_group = entry(&group, "jobd");
    assert_eq!(jobd[3], jobd_group[2], "user jobd's primary group is jobd");
    assert_eq!(jobd[5], "/var/lib/jobd");
    assert!(
        jobd_group[3].split(',').any(|m| m == "jobd-http"),
        "jobd-http is a member of group jobd: {jobd_group:?}"
    );
    let uid: u32 = jobd[2].parse().expect("uid");
    assert!(uid > 0 && uid < 1000, "a system uid: {uid}");
    assert_ne!(http[2], jobd[2]);

    let conf = packaging_dir().join("tmpfiles.d/jobd.conf");
    let mut cmd = Command::new("systemd-tmpfiles");
    cmd.arg("--create").arg(format!("--root={r}")).arg(&conf);
    run_with_timeout(cmd, None, DAEMON_TIMEOUT).ok();
    use std::os::unix::fs::MetadataExt;
    for (dir, mode) in [
        ("run/jobd", 0o750),
        ("var/lib/jobd", 0o700),
        ("var/log/jobd", 0o750),
    ] {
        let path = root.path().join(dir);
        assert_eq!(mode_of(&path), mode, "/{dir}");
        if is_root() {
            let meta = fs::metadata(&path).expect("stat");
            assert_eq!(meta.uid(), uid, "/{dir} owner");
            assert_eq!(meta.gid().to_string(), jobd_group[2], "/{dir} group");
        }
    }
    // The socket unit and tmpfiles agree on the socket directory's mode.
    assert_eq!(unit_value("jobd.socket", "DirectoryMode"), "0750");
    assert_eq!(unit_value("jobd.socket", "SocketMode"), "0660");
}

#[test]
fn jobctl_prints_completion_scripts() {
    let run = |args: &[&str]| -> Out {
        let mut cmd = Command::new(&bins().jobctl);
        cmd.args(args);
        run_with_timeout(cmd, None, DAEMON_TIMEOUT)
    };
    let bash = run(&["completions", "bash"]).ok().stdout_str();
    assert!(
        bash.contains("complete") && bash.contains("bulk-team"),
        "{bash}"
    );
    let zsh = run(&["completions", "zsh"]).ok().stdout_str();
    assert!(zsh.starts_with("#compdef jobctl"), "{zsh}");
    let fish = run(&["completions", "fish"]).ok().stdout_str();
    assert!(fish.contains("complete -c jobctl"), "{fish}");
    // No daemon is needed, and an unknown shell is a usage error.
    run(&["--socket", "/nonexistent/jobd.sock", "completions", "bash"]).ok();
    run(&["completions", "tcsh"]).expect_code(2, Some("tcsh"));
}
