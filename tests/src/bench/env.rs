//! The benchmark's environment: options, binaries, the temporary root directory,
//! real daemons on it, and the clean-up that runs on exit, panic or signal.

use super::data::{write_csv, CsvFile};
use super::stats::Measure;
use anyhow::{anyhow, bail, Context, Result};
use jobd_protocol::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::fs::{self, File};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Sizes and counts of the scenarios; `--quick` scales them down.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub runs: usize,
    /// Runs of the heavy scenarios (memory, many-jobs, restart).
    pub heavy_runs: usize,
    /// Runs of many-jobs (each is 100 000 submissions and a long queue to drain).
    pub many_runs: usize,
    pub ingest_rows: u64,
    pub big_bytes: u64,
    pub rtt_calls: usize,
    pub throughput_secs: f64,
    pub throughput_conns: usize,
    /// Client threads of the throughput scenario.
    pub client_threads: usize,
    pub stop_cycles: usize,
    pub jobctl_stops: usize,
    pub paused_jobs: usize,
    pub idle_secs: f64,
    pub many_jobs: usize,
    pub restart_jobs: usize,
    pub restart_unfinished: usize,
    /// Seconds of each wrk run of the http scenario.
    pub http_secs: f64,
    /// Cross-node `jobctl stop` calls per run of nodes-stop.
    pub node_stops: usize,
    /// Submitted one-row jobs per run of nodes-claim.
    pub node_claims: usize,
    /// Small jobs per run of nodes-many (with 3 nodes, and with 1).
    pub node_jobs: usize,
    /// Finished jobs in the store of the prune scenario.
    pub prune_jobs: usize,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            runs: 5,
            heavy_runs: 3,
            many_runs: 1,
            ingest_rows: 1_000_000,
            big_bytes: 1 << 30,
            rtt_calls: 100_000,
            throughput_secs: 3.0,
            throughput_conns: 8,
            client_threads: 2,
            stop_cycles: 1000,
            jobctl_stops: 200,
            paused_jobs: 10_000,
            idle_secs: 10.0,
            many_jobs: 100_000,
            restart_jobs: 100_000,
            restart_unfinished: 1000,
            http_secs: 5.0,
            node_stops: 200,
            node_claims: 200,
            node_jobs: 2000,
            prune_jobs: 100_000,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            runs: 2,
            heavy_runs: 1,
            many_runs: 1,
            ingest_rows: 100_000,
            big_bytes: 64 << 20,
            rtt_calls: 10_000,
            throughput_secs: 1.0,
            throughput_conns: 8,
            client_threads: 2,
            stop_cycles: 100,
            jobctl_stops: 30,
            paused_jobs: 1000,
            idle_secs: 3.0,
            many_jobs: 5_000,
            restart_jobs: 5_000,
            restart_unfinished: 100,
            http_secs: 2.0,
            node_stops: 40,
            node_claims: 40,
            node_jobs: 300,
            prune_jobs: 5_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bins {
    pub jobd: PathBuf,
    pub jobctl: PathBuf,
    pub jobd_http: PathBuf,
    pub sqlite3: Option<PathBuf>,
    /// `psql`, for the PostgreSQL ingest reference (`\copy`).
    pub psql: Option<PathBuf>,
    pub wrk: Option<PathBuf>,
    /// Builds the Gin reference of the `http` scenario (with Debian's Gin sources).
    pub go: Option<PathBuf>,
}

/// Everything a scenario needs.
pub struct Env {
    pub sizes: Sizes,
    pub bins: Bins,
    /// The temporary root: data files and one directory per daemon.
    pub root: PathBuf,
    next_dir: AtomicU32,
    /// The ingest file (generated once, shared by the scenarios that need a big upload).
    ingest: Mutex<Option<(PathBuf, CsvFile)>>,
    /// A daemon holding the many-jobs store, handed from `many-jobs` to `restart`.
    pub store: Mutex<Option<(Jobd, usize)>>,
    /// Whether `many-jobs` should hand its last store on.
    pub keep_store: bool,
    /// The PostgreSQL server of the `pg-` scenarios (a URL without a database).
    pub pg: String,
    /// Set while a `pg-` scenario runs: daemons get a fresh database of `pg`.
    on_pg: std::sync::atomic::AtomicBool,
}

static CLEANUP: Mutex<Option<Cleanup>> = Mutex::new(None);

#[derive(Default)]
struct Cleanup {
    pids: HashSet<u32>,
    /// Databases made on the PostgreSQL server: (server URL, name).
    dbs: HashSet<(String, String)>,
    root: Option<PathBuf>,
    keep: bool,
}

fn with_cleanup<T>(f: impl FnOnce(&mut Cleanup) -> T) -> T {
    let mut g = CLEANUP.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Cleanup::default))
}

/// Kills every daemon still registered and removes the root directory.
pub fn cleanup_all() {
    with_cleanup(|c| {
        let pids: Vec<Pid> = c.pids.drain().map(|p| Pid::from_raw(p as i32)).collect();
        for &pid in &pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
        // Reap them, so that no daemon still writes while the directory is removed.
        for &pid in &pids {
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        for (server, name) in c.dbs.drain() {
            drop_database(&server, &name);
        }
        if let Some(root) = c.root.take() {
            if !c.keep {
                for _ in 0..3 {
                    match fs::remove_dir_all(&root) {
                        Ok(()) => break,
                        Err(_) if !root.exists() => break,
                        Err(e) => eprintln!("bench: removing {}: {e}", root.display()),
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
}

/// Handles SIGINT, SIGTERM and SIGHUP in a dedicated thread: kill the daemons, remove
/// the temporary root, exit 130. (Handlers, not a blocked mask: children inherit a
/// blocked mask, and the daemons must still see SIGTERM.)
pub fn install_signal_handler() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let streams = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                );
                let (mut int, mut term, mut hup) = match streams {
                    (Ok(a), Ok(b), Ok(c)) => {
                        let _ = tx.send(Ok(()));
                        (a, b, c)
                    }
                    (a, b, c) => {
                        let e = [a.err(), b.err(), c.err()].into_iter().flatten().next();
                        let _ = tx.send(Err(e.unwrap_or_else(|| std::io::Error::other("signal"))));
                        return;
                    }
                };
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                };
                eprintln!("\nbench: {name}: killing daemons and removing temporary files");
                cleanup_all();
                std::process::exit(130);
            });
        })?;
    rx.recv().map_err(|_| anyhow!("signal thread died"))??;
    Ok(())
}

impl Env {
    pub fn new(
        sizes: Sizes,
        bins: Bins,
        tmp: Option<PathBuf>,
        keep: bool,
        keep_store: bool,
        pg: String,
    ) -> Result<Env> {
        let base = tmp.unwrap_or_else(std::env::temp_dir);
        let root = tempfile::Builder::new()
            .prefix("jobd-bench-")
            .tempdir_in(&base)
            .with_context(|| format!("temporary directory in {}", base.display()))?
            .keep();
        with_cleanup(|c| {
            c.root = Some(root.clone());
            c.keep = keep;
        });
        Ok(Env {
            sizes,
            bins,
            root,
            next_dir: AtomicU32::new(0),
            ingest: Mutex::new(None),
            store: Mutex::new(None),
            keep_store,
            pg,
            on_pg: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs `f` with every daemon it starts on a fresh PostgreSQL database, and
    /// names its measures `scenario`.
    pub fn on_postgres(
        &self,
        scenario: &str,
        f: impl FnOnce(&Env) -> Result<Vec<Measure>>,
    ) -> Result<Vec<Measure>> {
        postgres::Client::connect(&format!("{}/postgres", self.pg), postgres::NoTls)
            .map_err(|e| anyhow!("PostgreSQL at {}: {e}", self.pg))?;
        self.on_pg.store(true, Ordering::SeqCst);
        let r = f(self);
        self.on_pg.store(false, Ordering::SeqCst);
        let mut measures = r?;
        for m in &mut measures {
            m.scenario = scenario.to_string();
        }
        Ok(measures)
    }

    /// Whether a `pg-` scenario is running.
    pub fn is_postgres(&self) -> bool {
        self.on_pg.load(Ordering::SeqCst)
    }

    /// A fresh, empty database on the PostgreSQL server; dropped with the guard.
    pub fn fresh_database(&self, name: &str) -> Result<Database> {
        let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
        let db = format!(
            "jobd_bench_{}_{n}_{}",
            std::process::id(),
            name.replace('-', "_")
        );
        let mut c = postgres::Client::connect(&format!("{}/postgres", self.pg), postgres::NoTls)
            .map_err(|e| anyhow!("PostgreSQL at {}: {e}", self.pg))?;
        c.batch_execute(&format!("CREATE DATABASE {db}"))?;
        with_cleanup(|c| c.dbs.insert((self.pg.clone(), db.clone())));
        Ok(Database {
            server: self.pg.clone(),
            name: db,
        })
    }

    /// The ingest CSV (`ingest_rows` rows, seed 1), generated on first use.
    pub fn ingest_file(&self) -> Result<(PathBuf, CsvFile)> {
        let mut g = self.ingest.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = g.as_ref() {
            return Ok(f.clone());
        }
        let path = self.root.join("ingest.csv");
        let t = Instant::now();
        let info = write_csv(&path, 1, Some(self.sizes.ingest_rows), None)?;
        eprintln!(
            "  generated {} ({} rows, {:.1} MB) in {:.1} s",
            path.display(),
            info.rows,
            info.bytes as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        *g = Some((path, info));
        Ok(g.clone().expect("just set"))
    }

    /// A fresh directory under the root.
    pub fn fresh_dir(&self, name: &str) -> Result<PathBuf> {
        let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{name}-{n}"));
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Starts a daemon on a fresh directory (and, in a `pg-` scenario, a fresh
    /// database) and waits until it answers a ping.
    pub fn daemon(&self, name: &str, extra: &[&str]) -> Result<Jobd> {
        let db = if self.on_pg.load(Ordering::SeqCst) {
            Some(self.fresh_database(name)?)
        } else {
            None
        };
        let extra = extra.iter().map(|s| s.to_string()).collect();
        self.spawn_in_fresh_dir(name, db, extra)
    }

    /// `n` nodes (`--node n1`, `n2`, ...) on one fresh database of the PostgreSQL
    /// server, each with its own directory, all answering a ping.
    pub fn cluster(&self, name: &str, n: usize, extra: &[&str]) -> Result<Cluster> {
        let db = self.fresh_database(name)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let mut args = vec![
                "--store".to_string(),
                db.url(),
                "--node".to_string(),
                format!("n{i}"),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            nodes.push(self.spawn_in_fresh_dir(name, None, args)?);
        }
        Ok(Cluster { nodes, _db: db })
    }

    fn spawn_in_fresh_dir(
        &self,
        name: &str,
        db: Option<Database>,
        extra: Vec<String>,
    ) -> Result<Jobd> {
        let dir = self.fresh_dir(name)?;
        let mut d = Jobd {
            db,
            socket: dir.join("run").join("jobd.sock"),
            state_dir: dir.join("state"),
            dir,
            jobd: self.bins.jobd.clone(),
            jobctl: self.bins.jobctl.clone(),
            extra,
            child: None,
            starts: 0,
        };
        d.spawn()?;
        Ok(d)
    }
}

/// Nodes on one database: the nodes are dropped (killed) before the database.
pub struct Cluster {
    pub nodes: Vec<Jobd>,
    _db: Database,
}

impl Env {
    /// Starts a daemon on a copy of the stopped daemon `template`'s store: its
    /// state directory copied, or on PostgreSQL a database made from its
    /// database (`CREATE DATABASE ... TEMPLATE`). Builds a big store once, then
    /// runs on fresh copies of it.
    pub fn daemon_from(&self, name: &str, template: &Jobd, extra: &[&str]) -> Result<Jobd> {
        if template.child.is_some() {
            bail!("the template daemon still runs");
        }
        let dir = self.fresh_dir(name)?;
        let db = match &template.db {
            Some(from) => {
                let db = self.fresh_database_named(name)?;
                let mut c =
                    postgres::Client::connect(&format!("{}/postgres", self.pg), postgres::NoTls)
                        .map_err(|e| anyhow!("PostgreSQL at {}: {e}", self.pg))?;
                c.batch_execute(&format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    db.name, from.name
                ))?;
                Some(db)
            }
            None => {
                copy_dir(&template.state_dir, &dir.join("state"))?;
                None
            }
        };
        let mut d = Jobd {
            db,
            socket: dir.join("run").join("jobd.sock"),
            state_dir: dir.join("state"),
            dir,
            jobd: self.bins.jobd.clone(),
            jobctl: self.bins.jobctl.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            starts: 0,
        };
        d.spawn()?;
        Ok(d)
    }

    /// A database name of the benchmark's own, not created yet (dropped with
    /// the guard once it is).
    fn fresh_database_named(&self, name: &str) -> Result<Database> {
        let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
        let db = format!(
            "jobd_bench_{}_{n}_{}",
            std::process::id(),
            name.replace('-', "_")
        );
        with_cleanup(|c| c.dbs.insert((self.pg.clone(), db.clone())));
        Ok(Database {
            server: self.pg.clone(),
            name: db,
        })
    }
}

/// Copies a directory tree (files and directories only).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            fs::copy(e.path(), &target).with_context(|| format!("copy {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Runs a future to its end on a fresh current-thread runtime (the client side of every
/// scenario is single-threaded: no work stealing noise on a 2-core machine).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// One real `jobd` on `DIR/run/jobd.sock` and `DIR/state`; dropping it kills the
/// daemon and removes the directory.
pub struct Jobd {
    /// The daemon's database, dropped after it.
    pub db: Option<Database>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    jobd: PathBuf,
    jobctl: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    starts: u32,
}

/// How long a daemon may take to answer its first ping or to exit on SIGTERM.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(120);

impl Jobd {
    /// Spawns jobd and waits until it answers a ping over the client library; returns
    /// the time from just before exec to the answered ping.
    pub fn spawn(&mut self) -> Result<Duration> {
        if self.child.is_some() {
            bail!("the daemon is already running");
        }
        self.starts += 1;
        let log = File::create(self.dir.join(format!("jobd-{}.log", self.starts)))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut cmd = Command::new(&self.jobd);
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra)
            .args(
                self.db
                    .iter()
                    .flat_map(|db| ["--store".to_string(), db.url()]),
            )
            .env_remove("JOBD_SOCKET")
            .env_remove("JOBD_STORE")
            .env_remove("JOBD_STATE_DIR")
            .env_remove("JOBD_CONFIG")
            .env_remove("JOBD_LOG")
            .env_remove("JOBD_LOG_DIR")
            // No user config file may change what is measured.
            .env("XDG_CONFIG_HOME", &self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let start = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.jobd.display()))?;
        with_cleanup(|c| c.pids.insert(child.id()));
        self.child = Some(child);
        let deadline = start + DAEMON_TIMEOUT;
        loop {
            let ok = rt.block_on(async {
                match Client::connect(&self.socket, "jobd-bench").await {
                    Ok(mut c) => c.ping().await.is_ok(),
                    Err(_) => false,
                }
            });
            if ok {
                return Ok(start.elapsed());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.forget_child();
                bail!("jobd exited before answering ({status}):\n{}", self.logs());
            }
            if Instant::now() > deadline {
                bail!(
                    "jobd did not answer a ping within {DAEMON_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            thread::sleep(Duration::from_micros(500));
        }
    }

    fn forget_child(&mut self) {
        if let Some(c) = self.child.take() {
            with_cleanup(|cl| cl.pids.remove(&c.id()));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// The daemon's logs over all its starts (the tail, for error messages).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.starts {
            let text = fs::read(self.dir.join(format!("jobd-{n}.log"))).unwrap_or_default();
            s.push_str(&String::from_utf8_lossy(&text));
        }
        let tail: Vec<&str> = s.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Sends `sig` and waits for the exit.
    pub fn signal_and_wait(&mut self, sig: Signal) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("the daemon is not running"))?;
        let pid = child.id();
        let _ = kill(Pid::from_raw(pid as i32), sig);
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        let res = loop {
            if let Some(status) = child.try_wait()? {
                break if sig == Signal::SIGKILL || status.success() {
                    Ok(())
                } else {
                    Err(anyhow!(
                        "jobd exited with {status} after {sig}:\n{}",
                        self.logs()
                    ))
                };
            }
            if Instant::now() > deadline {
                let threads = thread_states(pid);
                let _ = child.kill();
                let _ = child.wait();
                break Err(anyhow!(
                    "jobd did not exit within {DAEMON_TIMEOUT:?} of {sig}; threads: {threads}\nlog tail:\n{}",
                    self.logs()
                ));
            }
            thread::sleep(Duration::from_millis(2));
        };
        with_cleanup(|c| c.pids.remove(&pid));
        res
    }

    /// SIGTERM and wait (a clean shutdown).
    pub fn shutdown(&mut self) -> Result<()> {
        self.signal_and_wait(Signal::SIGTERM)
    }

    pub async fn client(&self) -> Result<Client> {
        Client::connect(&self.socket, "jobd-bench")
            .await
            .map_err(|e| anyhow!("connect to {}: {e}", self.socket.display()))
    }

    /// `jobctl --socket S ARGS...` (stdin null, output captured; not spawned).
    pub fn jobctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.jobctl);
        cmd.env_remove("JOBD_SOCKET")
            .arg("--socket")
            .arg(&self.socket)
            .args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// The arguments `--socket S ARGS...` as strings (for `run_measuring_rss`).
    pub fn jobctl_args(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec!["--socket".to_string(), self.socket.display().to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    pub fn jobctl_path(&self) -> &Path {
        &self.jobctl
    }
}

/// A database of the benchmark's own on the PostgreSQL server.
pub struct Database {
    server: String,
    pub name: String,
}

impl Database {
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        drop_database(&self.server, &self.name);
        with_cleanup(|c| c.dbs.remove(&(self.server.clone(), self.name.clone())));
    }
}

fn drop_database(server: &str, name: &str) {
    if let Ok(mut c) = postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

/// `name:state` of each thread, for a daemon that does not exit.
fn thread_states(pid: u32) -> String {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for e in rd.flatten() {
            let status = fs::read_to_string(e.path().join("status")).unwrap_or_default();
            let get = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                    .unwrap_or_default()
            };
            let wchan = fs::read_to_string(e.path().join("wchan")).unwrap_or_default();
            out.push(format!("{}:{}:{}", get("Name:"), get("State:"), wchan));
        }
    }
    out.join(", ")
}

impl Drop for Jobd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            with_cleanup(|cl| cl.pids.remove(&c.id()));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
