//! `jobd-http` under `wrk`: `GET /updateTask` for an unknown id (issue 3 compares
//! it with the old service, ~70 000 requests per second on this kind of machine),
//! with two references from the same shim in the same run: the static 404 of an
//! unknown route (the HTTP stack alone, no lookup) and an id that must go to the
//! daemon (a socket round trip per request).

use super::progress;
use crate::bench::env::{Env, Jobd};
use crate::bench::procfs::cpu_time;
use crate::bench::stats::{secs, Measure, Target, Unit};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const H: &str = "http";

/// wrk's shape in issue 3: 32 keep-alive connections (two threads).
const CONNECTIONS: u32 = 32;

pub fn http(env: &Env) -> Result<Vec<Measure>> {
    let Some(wrk) = env.bins.wrk.clone() else {
        bail!("wrk is not installed (apt-get install wrk)");
    };
    let d = env.daemon(H, &[])?;
    let shim = Shim::start(&env.bins.jobd_http, &d)?;
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("http://{}", shim.addr);
    for run in 0..env.sizes.runs {
        let c0 = cpu_time(shim.pid())?;
        let (rate, requests) = run_wrk(
            &wrk,
            &format!("{base}/updateTask?id=nope&action=stop"),
            secs_each,
        )?;
        let c1 = cpu_time(shim.pid())?;
        let (floor, _) = run_wrk(&wrk, &format!("{base}/nothere"), secs_each)?;
        // Shaped like an id of this very second: never remembered as missing.
        let (asked, _) = run_wrk(
            &wrk,
            &format!("{base}/updateTask?id=nobody-bulkTeam-{now}-1&action=stop"),
            secs_each,
        )?;
        let per_req = secs(c1.saturating_sub(c0)) / requests.max(1) as f64;
        progress(
            H,
            format!(
                "run {}/{}: unknown id {rate:.0} req/s ({:.1} µs CPU/req), static 404 {floor:.0} req/s, daemon round trip {asked:.0} req/s",
                run + 1,
                env.sizes.runs,
                per_req * 1e6
            ),
        );
        unknown.push_with_ref(rate, floor);
        cpu.push(per_req);
        daemon.push(asked);
    }
    drop(shim);
    drop(d);
    Ok(vec![unknown, cpu, daemon])
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

/// A `jobd-http` on a free local port, killed on drop.
struct Shim {
    child: Child,
    addr: String,
}

impl Shim {
    fn start(bin: &Path, d: &Jobd) -> Result<Shim> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(bin)
            .args(["--listen", &addr, "--socket"])
            .arg(&d.socket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let shim = Shim { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !shim.healthy() {
            if Instant::now() > deadline {
                bail!("jobd-http did not answer /healthz within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(shim)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let req = "GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
        let mut reply = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut reply).is_ok()
            && reply.starts_with("HTTP/1.1 200")
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
