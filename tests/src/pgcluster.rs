//! A private, throwaway PostgreSQL server for tests that must stop, restart or
//! misconfigure their database: `initdb` into a temporary directory, `pg_ctl` on a
//! free port. `initdb` and `postgres` refuse to run as root; as root they run as the
//! `postgres` user (`runuser`), and the directory is given to that user.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

use crate::daemon::run_with_timeout;

/// How a test cluster lets clients in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Trust,
    /// The superuser `postgres` has this password (scram-sha-256).
    Password(&'static str),
}

pub struct PgCluster {
    _dir: TempDir,
    data: PathBuf,
    pub port: u16,
    running: bool,
}

/// Where the server's programs are: `JOBD_TEST_PG_BIN`, else Debian's layout.
fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("JOBD_TEST_PG_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").is_file());
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no PostgreSQL server programs (initdb) under /usr/lib/postgresql; set JOBD_TEST_PG_BIN"))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A command of the server's, as the `postgres` user when we are root.
fn server_cmd(program: &str) -> Command {
    let path = bin_dir().join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgCluster {
    /// A new cluster, started.
    pub fn start(auth: Auth) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("jobd-pg")
            .tempdir()
            .expect("temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the cluster's directory");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data directory");
        if is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("a postgres user");
            nix::unistd::chown(&data, Some(pg.uid), Some(pg.gid))
                .expect("chown the data directory");
        }
        let mut init = server_cmd("initdb");
        init.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--no-sync"]);
        match auth {
            Auth::Trust => {
                init.args(["-A", "trust"]);
            }
            Auth::Password(pw) => {
                let pwfile = dir.path().join("pw");
                std::fs::write(&pwfile, pw).expect("password file");
                std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644))
                    .expect("chmod password file");
                init.args(["-A", "scram-sha-256", "--pwfile"]).arg(&pwfile);
            }
        }
        let out = run_with_timeout(init, None, Duration::from_secs(120));
        assert_eq!(out.code, Some(0), "initdb failed: {out}");
        let mut c = PgCluster {
            _dir: dir,
            data,
            port: free_port(),
            running: false,
        };
        c.start_server();
        c
    }

    fn socket_dir(&self) -> &Path {
        &self.data
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The same through the Unix socket directory.
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@/{db}?host={}&port={}",
            self.socket_dir().display(),
            self.port
        )
    }

    fn pg_ctl(&self, args: &[&str]) {
        let mut c = server_cmd("pg_ctl");
        c.arg("-D").arg(&self.data).args(args);
        let out = run_with_timeout(c, None, Duration::from_secs(120));
        assert_eq!(out.code, Some(0), "pg_ctl {args:?} failed: {out}");
    }

    /// Starts the server (waiting until it accepts connections).
    pub fn start_server(&mut self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.socket_dir().display()
        );
        self.pg_ctl(&["-w", "-l", "/dev/null", "-o", &opts, "start"]);
        self.running = true;
    }

    /// Stops the server fast: open transactions are rolled back, clients cut off.
    pub fn stop_server(&mut self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
        self.running = false;
    }

    /// Runs SQL as the superuser (password auth needs it in the URL).
    pub fn sql(&self, db: &str, password: Option<&str>, sql: &str) {
        let url = match password {
            Some(pw) => format!("postgres://postgres:{pw}@127.0.0.1:{}/{db}", self.port),
            None => self.url(db),
        };
        let mut c = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        c.batch_execute(sql).unwrap_or_else(|e| {
            let why = e.as_db_error().map(|d| d.message().to_string());
            panic!("{sql}: {e} {why:?}")
        });
    }

    /// A connection to a database of this server (trust auth).
    pub fn connect(&self, db: &str) -> postgres::Client {
        let url = self.url(db);
        postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let mut c = server_cmd("pg_ctl");
            c.arg("-D")
                .arg(&self.data)
                .args(["-w", "-m", "immediate", "stop"]);
            let _ = c.output();
        }
    }
}
