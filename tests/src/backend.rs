//! The store a test daemon runs on. Every test of the end-to-end suite that
//! touches the store runs twice, once per backend ([`both_stores!`]): on the
//! embedded SQLite store, and on a fresh database of a real PostgreSQL server
//! (`JOBD_TEST_PG`, default `postgres://postgres@127.0.0.1:5432`), created for the
//! daemon and dropped with it.
//!
//! Without a reachable server the PostgreSQL half fails under `CI=true`, and is
//! skipped with a message elsewhere.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Which store a test daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Defines `mod NAME { fn sqlite(); fn postgres(); }`, two tests calling
/// `NAME(Backend::Sqlite)` and `NAME(Backend::Postgres)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::Backend::Sqlite)
            }

            #[test]
            fn postgres() {
                if $crate::backend::postgres_or_skip(stringify!($name)) {
                    super::$name($crate::Backend::Postgres)
                }
            }
        }
    )*};
}

/// The PostgreSQL server tests use, as a URL without a database.
pub fn server_url() -> String {
    std::env::var("JOBD_TEST_PG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// A connection to the server's `postgres` database, for administration.
pub fn admin() -> Result<postgres::Client, String> {
    let url = format!("{}/postgres", server_url());
    postgres::Client::connect(&url, postgres::NoTls).map_err(|e| format!("{url}: {e}"))
}

/// Whether the PostgreSQL half of a test runs: true when the server answers;
/// false (with a message) when it does not and this is not CI; a failure in CI.
pub fn postgres_or_skip(test: &str) -> bool {
    static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let reachable = REACHABLE.get_or_init(|| {
        let mut c = admin()?;
        drop_stale_databases(&mut c);
        Ok(())
    });
    match reachable {
        Ok(()) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: PostgreSQL is needed and not reachable: {e}")
        }
        Err(e) => {
            eprintln!(
                "{test}: skipped on PostgreSQL (not reachable: {e}; CI=true makes this a failure)"
            );
            false
        }
    }
}

/// Databases of test processes that died before dropping theirs.
fn drop_stale_databases(c: &mut postgres::Client) {
    let Ok(rows) = c.query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'jobd\\_t\\_%'",
        &[],
    ) else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// A fresh database for one test daemon; dropped (with its connections) on drop.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "jobd_t_{}_{}_{:04x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            fastrand_u16()
        );
        let mut c = admin().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        PgDatabase { name }
    }

    /// The URL jobd is given.
    pub fn url(&self) -> String {
        format!("{}/{}", server_url(), self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut c) = admin() {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn fastrand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (t >> 16)) as u16
}
