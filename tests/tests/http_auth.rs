//! `jobd-http --token-file`: every route but `/healthz` needs a bearer token (the
//! legacy routes too), the dashboard logs in with one and keeps a session
//! cookie; the token file is checked; tokens never reach the log; and without
//! tokens jobd-http does not listen beyond loopback unless told to.

use jobd_tests::http::{jobd_http_bin, HttpResponse, Multipart, Shim};
use jobd_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN_A: &str = "alpha-token-0123456789abcdef";
const TOKEN_B: &str = "bravo-token-fedcba9876543210zz";

fn token_file(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(format!("tokens-{mode:o}"));
    std::fs::write(&path, text).expect("write token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[track_caller]
fn unauthorized(resp: &HttpResponse) {
    resp.expect_error(401, "unauthorized");
    assert_eq!(
        resp.header("www-authenticate"),
        Some("Bearer realm=\"jobd-http\""),
        "{resp}"
    );
}

#[test]
fn tokens_guard_every_route_but_healthz() {
    let d = Daemon::start();
    let file = token_file(
        d.dir(),
        &format!("# two tokens\n{TOKEN_A}\n\n{TOKEN_B}\n"),
        0o600,
    );
    let shim = Shim::start(&d, &["--token-file", file.to_str().expect("utf-8")]);
    let live = d.upload(&slow_baseline(3).bytes(), Some(SLOW_RATE));

    // Without a token: 401, legacy routes included (the fast path too).
    let csv = Multipart::new().file("file", "a.csv", b"date\n2020-01-01\n");
    for (method, target, body) in [
        ("GET", "/updateTask?id=x&action=stop".to_string(), vec![]),
        ("GET", format!("/updateTask?id={live}&action=stop"), vec![]),
        ("POST", "/uploadCSV".into(), csv.body()),
        ("POST", "/createBulkTeam".into(), csv.body()),
        (
            "POST",
            "/exportData".into(),
            br#"{"from":"2020-01-01","to":"2020-01-02"}"#.to_vec(),
        ),
        ("GET", "/jobs".into(), vec![]),
        ("GET", format!("/jobs/{live}"), vec![]),
        ("GET", format!("/jobs/{live}/events"), vec![]),
        ("POST", format!("/jobs/{live}/stop"), vec![]),
        ("POST", "/jobs".into(), vec![]),
        ("GET", "/events".into(), vec![]),
        ("GET", "/metrics".into(), vec![]),
        ("GET", "/nope".into(), vec![]),
    ] {
        let ct = csv.content_type();
        let headers: &[(&str, &str)] = if body.starts_with(b"--") {
            &[("Content-Type", ct.as_str())]
        } else {
            &[]
        };
        unauthorized(&shim.request(method, &target, headers, &body));
        let wrong = bearer("not-a-token-of-this-file");
        let mut with_wrong = headers.to_vec();
        with_wrong.push(("Authorization", wrong.as_str()));
        unauthorized(&shim.request(method, &target, &with_wrong, &body));
    }
    assert_eq!(d.status_json(&live)["state"], "running", "nothing changed");
    assert_eq!(d.status_all().len(), 1, "nothing was created");
    shim.get("/healthz").expect_json(200, "{\"status\":\"ok\"}");
    // The dashboard's pages answer with the login form.
    let login = shim.get("/ui/");
    assert_eq!(login.status, 401, "{login}");
    assert!(
        login.text().contains("<label for=\"token\">Token</label>"),
        "{login}"
    );

    // With either token, every route answers as without auth.
    for token in [TOKEN_A, TOKEN_B] {
        let auth = bearer(token);
        let h = [("Authorization", auth.as_str())];
        shim.request("GET", "/updateTask?id=&action=stop", &h, b"")
            .expect_error(400, "invalid_id");
        shim.request("GET", "/updateTask?id=nope&action=stop", &h, b"")
            .expect_error(404, "id_doesn't_exist");
        let r = shim.request("GET", &format!("/jobs/{live}"), &h, b"");
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(shim.request("GET", "/ui/", &h, b"").status, 200);
        assert_eq!(shim.request("GET", "/metrics", &h, b"").status, 200);
    }
    let auth = bearer(TOKEN_A);
    shim.request(
        "GET",
        &format!("/updateTask?id={live}&action=stop"),
        &[("Authorization", auth.as_str())],
        b"",
    )
    .expect_json(200, &format!("{{\"status\":\"Job {live} stopped.\"}}"));

    // The login form: a wrong token is refused, a right one opens a session.
    let form = |token: &str| format!("token={token}&next=%2Fui%2Fjobs%2F{live}");
    let r = shim.post(
        "/ui/login",
        Some("application/x-www-form-urlencoded"),
        form("wrong-wrong-wrong-wrong").as_bytes(),
    );
    assert_eq!(r.status, 401, "{r}");
    assert!(r.header("set-cookie").is_none());
    let r = shim.post(
        "/ui/login",
        Some("application/x-www-form-urlencoded"),
        form(TOKEN_B).as_bytes(),
    );
    assert_eq!(r.status, 303, "{r}");
    assert_eq!(
        r.header("location"),
        Some(format!("/ui/jobs/{live}").as_str())
    );
    let cookie = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains(TOKEN_B),
        "the cookie is not the token: {cookie}"
    );
    let session = cookie.split(';').next().expect("name=value").to_string();
    let with_cookie = [("Cookie", session.as_str())];
    assert_eq!(shim.request("GET", "/ui/", &with_cookie, b"").status, 200);
    assert_eq!(shim.request("GET", "/jobs", &with_cookie, b"").status, 200);
    // A login posted by another site is refused.
    shim.request(
        "POST",
        "/ui/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "http://evil.example"),
        ],
        form(TOKEN_A).as_bytes(),
    )
    .expect_error(403, "cross_origin");
    // Logging out ends the session.
    let out = shim.request("POST", "/ui/logout", &with_cookie, b"");
    assert_eq!(out.status, 303, "{out}");
    assert!(out
        .header("set-cookie")
        .is_some_and(|c| c.contains("Max-Age=0")));
    unauthorized(&shim.request("GET", "/jobs", &with_cookie, b""));

    // Tokens never reach the log.
    let log = shim.logs();
    for secret in [
        TOKEN_A,
        TOKEN_B,
        "not-a-token-of-this-file",
        "wrong-wrong-wrong",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

/// Runs `jobd-http ARGS` until it says it listens (then kills it: `Ok`) or exits
/// (`Err(stderr)`).
fn start_http(dir: &Path, args: &[&str]) -> Result<String, String> {
    let log = dir.join(format!("http-{}.log", fastrand_name()));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(jobd_http_bin())
        .env_remove("RUST_LOG")
        .args(["--socket", "/nonexistent/jobd.sock"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("spawn jobd-http");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("jobd-http listening") {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(text);
        }
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!status.success(), "exited 0 without listening: {text}");
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "jobd-http neither listened nor exited: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fastrand_name() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn token_files_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = ["--listen", "127.0.0.1:0"];
    let run = |file: &Path| {
        let mut args = listen.to_vec();
        args.extend(["--token-file", file.to_str().expect("utf-8")]);
        start_http(dir.path(), &args)
    };
    let good = token_file(dir.path(), &format!("{TOKEN_A}\n"), 0o600);
    assert!(run(&good).is_ok());
    let read_only = token_file(dir.path(), &format!("{TOKEN_A}\n"), 0o400);
    assert!(run(&read_only).is_ok());
    let cases = [
        (
            token_file(dir.path(), &format!("{TOKEN_A}\n"), 0o644),
            "mode 0644",
        ),
        (
            token_file(dir.path(), &format!("{TOKEN_A}\n"), 0o640),
            "mode 0640",
        ),
        (token_file(dir.path(), "# nothing\n", 0o700), "no token"),
        (dir.path().join("missing"), "cannot read the token file"),
    ];
    for (file, why) in &cases {
        let err = run(file).expect_err("refused");
        assert!(err.contains(why), "{why}: {err}");
        assert!(!err.contains(TOKEN_A), "the token is in the message: {err}");
    }
    // Too short a token, too big a file, too many tokens.
    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").expect("write");
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = run(&short).expect_err("refused");
    assert!(err.contains("line 1") && !err.contains("abc"), "{err}");
    let big = dir.path().join("big");
    std::fs::write(&big, "x".repeat(70_000)).expect("write");
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(run(&big).expect_err("refused").contains("larger than"));
    let many = dir.path().join("many");
    let text: String = (0..65).map(|i| format!("{TOKEN_A}-{i}\n")).collect();
    std::fs::write(&many, text).expect("write");
    std::fs::set_permissions(&many, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(run(&many)
        .expect_err("refused")
        .contains("more than 64 tokens"));
}

#[test]
fn open_addresses_need_tokens_or_insecure_listen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = start_http(dir.path(), &["--listen", "0.0.0.0:0"]).expect_err("refused");
    assert!(
        err.contains("refusing to listen") && err.contains("--token-file"),
        "{err}"
    );
    assert!(start_http(dir.path(), &["--listen", "0.0.0.0:0", "--insecure-listen"]).is_ok());
    let tokens = token_file(dir.path(), &format!("{TOKEN_A}\n"), 0o600);
    let tokens = tokens.to_str().expect("utf-8");
    assert!(start_http(
        dir.path(),
        &["--listen", "0.0.0.0:0", "--token-file", tokens]
    )
    .is_ok());
    assert!(
        start_http(dir.path(), &["--listen", "[::1]:0"]).is_ok()
            || !Path::new("/proc/net/if_inet6").exists()
    );
    let help = Command::new(jobd_http_bin())
        .arg("--help")
        .output()
        .expect("jobd-http --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--insecure-listen") && help.contains("--token-file"),
        "{help}"
    );
}
