//! `bench`: the jobd benchmark harness (issue 6; see docs/BENCHMARKS.md).
//!
//! cargo run --release -p jobd-tests --bin bench -- [OPTIONS] [SCENARIO...]
//!
//! Builds release binaries of jobd and jobctl, generates seeded data, starts real
//! daemons on a temporary directory, runs every scenario several times and prints a
//! table: median, min, max, the reference measured in the same run, the ratio, the
//! target and whether it holds.

#[path = "../bench/mod.rs"]
mod bench;

use anyhow::{anyhow, bail, Context, Result};
use bench::env::{cleanup_all, install_signal_handler, Bins, Env, Sizes};
use bench::procfs::{machine, maxrss_main};
use bench::scenarios::{Scenario, ALL};
use bench::stats::{markdown, table, Measure};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const USAGE: &str = "\
usage: bench [OPTIONS] [SCENARIO...]

Runs the jobd benchmark scenarios (all by default) and prints a table.

options:
  --runs N          runs per scenario (default 5; --quick: 2)
  --heavy-runs N    runs of the heavy scenarios memory and paused (default 3; --quick: 1)
  --many-runs N     runs of many-jobs (default 1: each run is --jobs submissions)
  --quick           smaller sizes and fewer runs: a smoke run of a few minutes
  --skip-big        skip the 1 GiB memory scenario (needs ~3.5 GiB of disk)
  --rows N          rows of the ingest file (default 1000000)
  --big-mib N       size of the memory scenario's file in MiB (default 1024)
  --rtt-calls N     status calls per rtt run (default 100000)
  --stop-cycles N   stop/start cycles per stop run (default 1000)
  --client-threads N  client threads of the throughput scenario (default 2)
  --paused N        jobs of the paused scenario (default 10000)
  --jobs N          jobs of the many-jobs and restart scenarios (default 100000)
  --unfinished N    unfinished jobs of the restart scenario (default 1000)
  --prune-jobs N    finished jobs of the prune scenarios (default 100000)
  --idle-secs S     idle window of the paused scenario (default 10)
  --no-build        do not run cargo build (use the binaries next to this one)
  --bin-dir DIR     use jobd, jobctl and jobd-http from DIR (implies --no-build)
  --tmp DIR         where the temporary directory goes (default $TMPDIR or /tmp)
  --pg URL          PostgreSQL server of the pg- scenarios, without a database
                    (default $JOBD_BENCH_PG, else postgres://postgres@127.0.0.1:5432)
  --keep            keep the temporary directory
  --markdown        print the table as Markdown too
  --list            list the scenarios and exit
";

struct Opts {
    sizes: Sizes,
    scenarios: Vec<&'static Scenario>,
    skip_big: bool,
    build: bool,
    bin_dir: Option<PathBuf>,
    tmp: Option<PathBuf>,
    keep: bool,
    markdown: bool,
    quick: bool,
    pg: String,
}

fn parse(args: &[String]) -> Result<Opts> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let mut o = Opts {
        sizes: sizes.clone(),
        scenarios: Vec::new(),
        skip_big: false,
        build: true,
        bin_dir: None,
        tmp: None,
        keep: false,
        markdown: false,
        quick,
        pg: std::env::var("JOBD_BENCH_PG")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into()),
    };
    let mut it = args.iter();
    fn num<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T> {
        v.ok_or_else(|| anyhow!("{flag} needs a value"))?
            .parse()
            .map_err(|_| anyhow!("{flag}: not a number"))
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {}
            "--runs" => sizes.runs = num(a, it.next())?,
            "--heavy-runs" => sizes.heavy_runs = num(a, it.next())?,
            "--many-runs" => sizes.many_runs = num(a, it.next())?,
            "--skip-big" => o.skip_big = true,
            "--rows" => sizes.ingest_rows = num(a, it.next())?,
            "--big-mib" => sizes.big_bytes = num::<u64>(a, it.next())? << 20,
            "--rtt-calls" => sizes.rtt_calls = num(a, it.next())?,
            "--client-threads" => sizes.client_threads = num(a, it.next())?,
            "--stop-cycles" => sizes.stop_cycles = num(a, it.next())?,
            "--paused" => sizes.paused_jobs = num(a, it.next())?,
            "--jobs" => {
                sizes.many_jobs = num(a, it.next())?;
                sizes.restart_jobs = sizes.many_jobs;
            }
            "--unfinished" => sizes.restart_unfinished = num(a, it.next())?,
            "--prune-jobs" => sizes.prune_jobs = num(a, it.next())?,
            "--idle-secs" => sizes.idle_secs = num(a, it.next())?,
            "--no-build" => o.build = false,
            "--bin-dir" => {
                o.bin_dir = Some(PathBuf::from(
                    it.next()
                        .ok_or_else(|| anyhow!("--bin-dir needs a value"))?,
                ));
                o.build = false;
            }
            "--tmp" => {
                o.tmp = Some(PathBuf::from(
                    it.next().ok_or_else(|| anyhow!("--tmp needs a value"))?,
                ))
            }
            "--keep" => o.keep = true,
            "--pg" => {
                o.pg = it
                    .next()
                    .ok_or_else(|| anyhow!("--pg needs a value"))?
                    .trim_end_matches('/')
                    .to_string()
            }
            "--markdown" => o.markdown = true,
            "--list" => {
                for s in ALL {
                    println!("{:12} {}", s.name, s.about);
                }
                std::process::exit(0);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            name if !name.starts_with('-') => {
                let s = ALL
                    .iter()
                    .find(|s| s.name == name)
                    .ok_or_else(|| anyhow!("unknown scenario {name} (--list shows them)"))?;
                o.scenarios.push(s);
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if sizes.runs == 0 || sizes.heavy_runs == 0 || sizes.many_runs == 0 {
        bail!("--runs, --heavy-runs and --many-runs must be at least 1");
    }
    if o.scenarios.is_empty() {
        o.scenarios = ALL.iter().collect();
    }
    if o.skip_big {
        o.scenarios.retain(|s| !s.big);
    }
    o.sizes = sizes;
    Ok(o)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// `cargo build --release -p jobd -p jobd-cli` into this executable's target directory;
/// returns `<target>/release`.
fn build_release() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // This binary is <target>/<profile>/bench.
    let target = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))?
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building release binaries of jobd and jobctl into {} ...",
        target.display()
    );
    let t = Instant::now();
    let status = Command::new(&cargo)
        .current_dir(workspace())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "jobd",
            "-p",
            "jobd-cli",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .with_context(|| format!("run {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    eprintln!("  built in {:.1} s", t.elapsed().as_secs_f64());
    Ok(target.join("release"))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn locate(o: &Opts) -> Result<Bins> {
    let dir = match (&o.bin_dir, o.build) {
        (Some(d), _) => d.clone(),
        (None, true) => build_release()?,
        (None, false) => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("no directory"))?
            .to_path_buf(),
    };
    let bins = Bins {
        jobd: dir.join("jobd"),
        jobctl: dir.join("jobctl"),
        jobd_http: dir.join("jobd-http"),
        sqlite3: find_in_path("sqlite3"),
        psql: find_in_path("psql"),
        wrk: find_in_path("wrk"),
        go: find_in_path("go"),
    };
    for b in [&bins.jobd, &bins.jobctl, &bins.jobd_http] {
        if !b.is_file() {
            bail!("{} is missing", b.display());
        }
    }
    Ok(bins)
}

fn git_rev() -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .current_dir(workspace())
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = run(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{rev} (with uncommitted changes)")
    } else {
        rev
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__maxrss") {
        maxrss_main(&args[1..]);
    }
    // `bench __gen FILE ROWS [SEED]`: write the benchmark's CSV (for profiling by hand).
    if args.first().map(String::as_str) == Some("__gen") {
        let code = match gen_main(&args[1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench __gen: {e:#}");
                2
            }
        };
        std::process::exit(code);
    }
    if let Err(e) = install_signal_handler() {
        eprintln!("bench: cannot install the signal handler: {e}");
    }
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: {e:#}");
            2
        }
    };
    cleanup_all();
    std::process::exit(code);
}

fn gen_main(args: &[String]) -> Result<()> {
    let [path, rows, rest @ ..] = args else {
        bail!("usage: bench __gen FILE ROWS [SEED]");
    };
    let rows: u64 = rows.parse().context("ROWS")?;
    let seed: u64 = rest.first().map_or(Ok(1), |s| s.parse()).context("SEED")?;
    let f = bench::data::write_csv(Path::new(path), seed, Some(rows), None)?;
    eprintln!("{path}: {} rows, {} bytes", f.rows, f.bytes);
    Ok(())
}

/// The server's version, for the header.
fn pg_version(server: &str) -> String {
    postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
        .and_then(|mut c| c.query_one("SHOW server_version", &[]))
        .map(|r| format!("PostgreSQL {}", r.get::<_, String>(0)))
        .unwrap_or_else(|e| format!("not reachable: {e}"))
}

fn run(args: &[String]) -> Result<i32> {
    let o = parse(args)?;
    let bins = locate(&o)?;
    let names: Vec<&str> = o.scenarios.iter().map(|s| s.name).collect();
    let keep_store = names.contains(&"many-jobs") && names.contains(&"restart");
    let env = Env::new(
        o.sizes.clone(),
        bins,
        o.tmp.clone(),
        o.keep,
        keep_store,
        o.pg.clone(),
    )?;
    let mut header = String::new();
    header.push_str(&format!("machine: {}\n", machine()));
    header.push_str(&format!("commit:  {}\n", git_rev()));
    header.push_str(&format!(
        "runs:    {} per scenario, {} for memory and paused, {} for many-jobs{}\n",
        o.sizes.runs,
        o.sizes.heavy_runs,
        o.sizes.many_runs,
        if o.quick {
            " (--quick: reduced sizes)"
        } else {
            ""
        }
    ));
    header.push_str(&format!(
        "sqlite3: {}\n",
        env.bins
            .sqlite3
            .as_ref()
            .map(|p| {
                let v = Command::new(p).arg("--version").output().ok();
                let v = v.map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string()
                });
                format!("{} {}", p.display(), v.unwrap_or_default())
            })
            .unwrap_or_else(|| "not found".into())
    ));
    if names.iter().any(|n| n.starts_with("pg-")) {
        header.push_str(&format!("pg:      {} ({})\n", env.pg, pg_version(&env.pg)));
    }
    header.push_str(&format!("tmp:     {}\n", env.root.display()));
    eprint!("{header}");
    let mut all: Vec<Measure> = Vec::new();
    let mut errors = 0;
    let started = Instant::now();
    for s in &o.scenarios {
        eprintln!("== {}: {}", s.name, s.about);
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| (s.run)(&env)));
        match r {
            Ok(Ok(ms)) => all.extend(ms),
            Ok(Err(e)) => {
                eprintln!("  [{}] FAILED: {e:#}", s.name);
                errors += 1;
                all.push(Measure::failed(s.name, format!("{e:#}")));
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                eprintln!("  [{}] PANICKED: {msg}", s.name);
                errors += 1;
                all.push(Measure::failed(s.name, msg));
            }
        }
        eprintln!("  ({:.0} s)", t.elapsed().as_secs_f64());
    }
    drop(env);
    println!();
    print!("{header}");
    println!("total:   {:.0} s\n", started.elapsed().as_secs_f64());
    print!("{}", table(&all));
    if o.markdown {
        println!();
        print!("{}", markdown(&all));
    }
    Ok(if errors > 0 { 1 } else { 0 })
}
