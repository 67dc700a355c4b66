//! What /proc says about a process, and peak RSS of a child process.

use anyhow::{anyhow, Context, Result};
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`, ...), in bytes.
pub fn status_kb(pid: u32, field: &str) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("parse {field} in /proc/{pid}/status"))?;
            return Ok(kb * 1024);
        }
    }
    Err(anyhow!("no {field} in /proc/{pid}/status"))
}

/// Number of open file descriptors.
pub fn fd_count(pid: u32) -> Result<u64> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("list /proc/{pid}/fd"))?
        .count() as u64)
}

/// What each open descriptor points to (`socket:[..]` shortened to `socket`, paths kept).
pub fn fd_targets(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            if let Ok(t) = fs::read_link(e.path()) {
                let t = t.display().to_string();
                let t = match t.find(":[") {
                    Some(i) => t[..i].to_string(),
                    None => t,
                };
                out.push(t);
            }
        }
    }
    out.sort();
    out
}

/// The descriptors in `after` that are not in `before` (multiset difference), as
/// `target xN` entries.
pub fn fd_diff(before: &[String], after: &[String]) -> String {
    let mut rest = before.to_vec();
    let mut added: Vec<(String, usize)> = Vec::new();
    for t in after {
        if let Some(i) = rest.iter().position(|b| b == t) {
            rest.swap_remove(i);
        } else {
            match added.iter_mut().find(|(n, _)| n == t) {
                Some((_, c)) => *c += 1,
                None => added.push((t.clone(), 1)),
            }
        }
    }
    if added.is_empty() {
        return "none".into();
    }
    added
        .iter()
        .map(|(t, c)| format!("{t} x{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Context switches (voluntary + involuntary) summed over the live threads.
pub fn ctx_switches(pid: u32) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for e in rd.flatten() {
            let text = fs::read_to_string(e.path().join("status")).unwrap_or_default();
            for l in text.lines() {
                if l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
                {
                    n += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    n
}

/// Number of threads.
pub fn thread_count(pid: u32) -> Result<u64> {
    Ok(fs::read_dir(format!("/proc/{pid}/task"))?.count() as u64)
}

/// CPU time (user + system) of the whole process, threads that already exited
/// included, with ns resolution: the process CPU clock (`clock_getcpuclockid`).
/// Falls back to utime + stime from /proc/PID/stat (10 ms ticks).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    use nix::time::{clock_getcpuclockid, clock_gettime};
    let clock = clock_getcpuclockid(nix::unistd::Pid::from_raw(pid as i32));
    match clock.and_then(clock_gettime) {
        Ok(ts) => Ok(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)),
        Err(_) => Ok(Duration::from_millis(cpu_ticks(pid)? * 10)),
    }
}

/// utime + stime from /proc/PID/stat, in clock ticks (cross-check of [`cpu_time`];
/// includes threads that have already exited).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; fields start after the last ')'.
    let rest = &text[text.rfind(')').ok_or_else(|| anyhow!("bad stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // state is field 3; utime 14 and stime 15 (1-based) -> indexes 11 and 12 here.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// A command run to its end under `bench __maxrss`, which reports the child's peak RSS.
pub struct Measured {
    pub output: Output,
    pub wall: Duration,
    /// Peak RSS of the command (bytes).
    pub max_rss: u64,
}

/// Runs `cmd` through this executable's `__maxrss` mode: a process whose only child is
/// the command, so that `getrusage(RUSAGE_CHILDREN)` there is that command's peak RSS.
pub fn run_measuring_rss(program: &Path, args: &[String]) -> Result<Measured> {
    let me = std::env::current_exe()?;
    let start = Instant::now();
    let output = Command::new(me)
        .arg("__maxrss")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()?;
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("__MAXRSS_KIB "))
        .ok_or_else(|| anyhow!("no peak RSS reported: {stderr}"))?;
    let kib: u64 = line["__MAXRSS_KIB ".len()..].trim().parse()?;
    Ok(Measured {
        output,
        wall,
        max_rss: kib * 1024,
    })
}

/// The `__maxrss PROGRAM ARGS...` mode: run the program with inherited stdio, then
/// print its peak RSS on stderr and exit with its exit code.
pub fn maxrss_main(args: &[String]) -> ! {
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: bench __maxrss PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let status = match Command::new(program).args(rest).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot run {program}: {e}");
            std::process::exit(127);
        }
    };
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    let kib = usage.map(|u| u.max_rss()).unwrap_or(-1);
    eprintln!("__MAXRSS_KIB {kib}");
    std::process::exit(status.code().unwrap_or(128));
}

/// `lscpu`'s model name and CPU count, memory, kernel: the machine line of the report.
pub fn machine() -> String {
    let lscpu = Command::new("lscpu")
        .env("LC_ALL", "C")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let field = |name: &str| {
        lscpu
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .map(|r| r.trim_start_matches(':').trim().to_string())
            })
            .unwrap_or_else(|| "?".into())
    };
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .map_or("?".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!(
        "{} — {} CPUs ({} cores/socket, {} threads/core), {} RAM, Linux {}",
        field("Model name"),
        field("CPU(s)"),
        field("Core(s) per socket"),
        field("Thread(s) per core"),
        mem,
        kernel
    )
}
