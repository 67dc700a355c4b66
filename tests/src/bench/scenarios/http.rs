//! `jobd-http` under `wrk`: `GET /updateTask` for an unknown id (issue 3 compares
//! it with the old service, ~70 000 requests per second on this kind of machine),
//! with references from the same run: the shim's own static 404 of an unknown
//! route (its HTTP stack alone, no lookup), an id that must go to the daemon (a
//! socket round trip per request), and, where Go and Debian's Gin sources are
//! installed, the old service's route on Gin (`tests/ref/gin`), with and
//! without Gin's request logger.

use super::progress;
use crate::bench::env::Env;
use crate::bench::procfs::cpu_time;
use crate::bench::stats::{secs, Measure, Target, Unit};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const H: &str = "http";

/// wrk's shape in issue 3: 32 keep-alive connections (two threads).
const CONNECTIONS: u32 = 32;

/// Where Debian's golang-github-gin-gonic-gin-dev puts Gin (a GOPATH).
const GOPATH: &str = "/usr/share/gocode";

const UNKNOWN: &str = "/updateTask?id=nope&action=stop";

pub fn http(env: &Env) -> Result<Vec<Measure>> {
    let Some(wrk) = env.bins.wrk.clone() else {
        bail!("wrk is not installed (apt-get install wrk)");
    };
    let d = env.daemon(H, &[])?;
    let mut shim_cmd = Command::new(&env.bins.jobd_http);
    shim_cmd
        .arg("--socket")
        .arg(&d.socket)
        .env("RUST_LOG", "warn");
    let shim = Server::start(shim_cmd, "--listen", "/healthz", "HTTP/1.1 200")?;
    let gin = match build_gin(env) {
        Ok(bin) => Some((start_gin(&bin, &[])?, start_gin(&bin, &["-nolog"])?)),
        Err(e) => {
            progress(H, format!("no Gin reference: {e:#}"));
            None
        }
    };
    let secs_each = env.sizes.http_secs;
    let mut unknown = Measure::new(
        H,
        &format!("GET /updateTask unknown id, {CONNECTIONS} conns (ref static 404)"),
        Unit::PerSecond,
        Some(Target::AtLeast(70_000.0)),
    );
    let mut cpu = Measure::new(H, "  jobd-http CPU per request (info)", Unit::Seconds, None);
    let mut daemon = Measure::new(
        H,
        "  id asked of the daemon each time (info)",
        Unit::PerSecond,
        None,
    );
    let mut vs_gin = Measure::new(
        H,
        "GET /updateTask unknown id (ref Gin, same route, no logger)",
        Unit::PerSecond,
        Some(Target::RatioAtLeast(1.0)),
    );
    let mut gin_logged = Measure::new(
        H,
        "  Gin with its request logger, as the old service ran (info)",
        Unit::PerSecond,
        None,
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("http://{}", shim.addr);
    for run in 0..env.sizes.runs {
        let c0 = cpu_time(shim.pid())?;
        let (rate, requests) = run_wrk(&wrk, &format!("{base}{UNKNOWN}"), secs_each)?;
        let c1 = cpu_time(shim.pid())?;
        let (floor, _) = run_wrk(&wrk, &format!("{base}/nothere"), secs_each)?;
        // Shaped like an id of this very second: never remembered as missing.
        let (asked, _) = run_wrk(
            &wrk,
            &format!("{base}/updateTask?id=nobody-bulkTeam-{now}-1&action=stop"),
            secs_each,
        )?;
        let per_req = secs(c1.saturating_sub(c0)) / requests.max(1) as f64;
        let mut line = format!(
            "run {}/{}: unknown id {rate:.0} req/s ({:.1} µs CPU/req), static 404 {floor:.0} req/s, daemon round trip {asked:.0} req/s",
            run + 1,
            env.sizes.runs,
            per_req * 1e6
        );
        unknown.push_with_ref(rate, floor);
        cpu.push(per_req);
        daemon.push(asked);
        if let Some((logged, bare)) = &gin {
            let (g, _) = run_wrk(&wrk, &format!("http://{}{UNKNOWN}", bare.addr), secs_each)?;
            let (gl, _) = run_wrk(&wrk, &format!("http://{}{UNKNOWN}", logged.addr), secs_each)?;
            line.push_str(&format!(", Gin {g:.0} req/s ({gl:.0} with its logger)"));
            vs_gin.push_with_ref(rate, g);
            gin_logged.push(gl);
        }
        progress(H, line);
    }
    drop(shim);
    drop(gin);
    drop(d);
    let mut measures = vec![unknown, cpu, daemon];
    if !vs_gin.samples.is_empty() {
        measures.extend([vs_gin, gin_logged]);
    }
    Ok(measures)
}

/// Builds `tests/ref/gin` with Debian's Go and Gin (GOPATH mode, nothing
/// downloaded) into the bench's directory.
fn build_gin(env: &Env) -> Result<PathBuf> {
    let go = env.bins.go.as_ref().ok_or_else(|| {
        anyhow!("go is not installed (apt-get install golang-go golang-github-gin-gonic-gin-dev)")
    })?;
    if !Path::new(GOPATH)
        .join("src/github.com/gin-gonic/gin")
        .is_dir()
    {
        bail!("Gin's sources are not installed (apt-get install golang-github-gin-gonic-gin-dev)");
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("ref/gin/main.go");
    let out = env.root.join("gin-ref");
    let built = Command::new(go)
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", env.root.join("go-cache"))
        .output()
        .with_context(|| format!("run {}", go.display()))?;
    if !built.status.success() {
        bail!(
            "go build {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&built.stderr)
        );
    }
    Ok(out)
}

/// The Gin reference, built by [`build_gin`], with `args`.
fn start_gin(bin: &Path, args: &[&str]) -> Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    Server::start(cmd, "-listen", "/updateTask?id=probe", "HTTP/1.1 404")
}

/// `wrk -t2 -c32 -dS URL`: requests per second and the number of requests.
fn run_wrk(wrk: &Path, url: &str, secs: f64) -> Result<(f64, u64)> {
    let out = Command::new(wrk)
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{secs:.0}s"),
            url,
        ])
        .output()
        .with_context(|| format!("run {}", wrk.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed ({}): {text}", out.status);
    }
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk's output: {text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no request count in wrk's output: {text}"))?;
    // Non-2xx is expected (every route here answers 404); socket errors are not.
    if text.contains("Socket errors") {
        bail!("wrk saw socket errors: {text}");
    }
    Ok((rate, requests))
}

/// A server on a free local port, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts `cmd` with `listen_flag ADDR` and waits until `GET probe` answers
    /// with a status line starting `expect`.
    fn start(mut cmd: Command, listen_flag: &str, probe: &str, expect: &str) -> Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let child = cmd
            .args([listen_flag, &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", cmd.get_program().to_string_lossy()))?;
        let server = Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.answers(probe, expect) {
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer GET {probe} within 30 s",
                    cmd.get_program().to_string_lossy()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn answers(&self, probe: &str, expect: &str) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let req = format!("GET {probe} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
        let mut reply = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut reply).is_ok()
            && reply.starts_with(expect)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
