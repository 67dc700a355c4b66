//! The PostgreSQL store: jobs, their effects, their uploads and their outputs all
//! in one database (schema `jobd`), so that any node can run or serve any job.
//!
//! The daemon's store interface blocks; this backend runs each call on the daemon's
//! runtime with `block_on` from the calling (blocking) thread, over a pool of
//! `tokio-postgres` connections. Errors that mean "the server cannot be reached"
//! become [`StoreError::Unavailable`]: callers wait and retry, nothing fails.

mod blobs;
mod cluster;
mod effects;
mod export;
mod jobs;
mod schema;

use super::{
    Batch, Claim, Cluster, CommitError, Day, DayQuery, DayRecord, Effects, Expect, ExportPlan,
    Forgotten, Input, JobRow, NewJob, NodeSettings, Owner, Progress, PruneQuery, Reader, Seal,
    Source, Store, StoreError, StoredState, Upload,
};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use jobd_protocol::JobState;
use jobd_protocol::RowError;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_postgres as pg;

/// Connections per node: workers, submits and reads each hold one for a call.
const POOL_SIZE: usize = 16;
/// A connection attempt gives up after this (unless the URL sets `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A call that gets no answer for this long counts as the server being unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The shortest time a commit may hold its job's row (see `Inner::guard`).
const MIN_GUARD: Duration = Duration::from_secs(10);
/// Waiting for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Startup options of every connection (see [`config_of`]).
const CUSTOM_PLANS: &str = "-c plan_cache_mode=force_custom_plan";

/// Checks a store URL without connecting.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    config_of(url).map(|_| ())
}

fn config_of(url: &str) -> Result<pg::Config, StoreError> {
    let mut c: pg::Config = url
        .parse()
        .map_err(|e| StoreError::Config(format!("invalid store URL {}: {e}", mask(url))))?;
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(CONNECT_TIMEOUT);
    }
    if c.get_application_name().is_none() {
        c.application_name("jobd");
    }
    // Plans are made for each execution, with the table's size then: a cached
    // generic plan made while the table was empty (a sequential scan) is kept
    // until the next ANALYZE, which never comes with autovacuum off — and a
    // claim or a key lookup then reads every job (40 ms at 100 000 jobs).
    // The URL's own `options` come after, so they win.
    let options = match c.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{CUSTOM_PLANS} {o}"),
        _ => CUSTOM_PLANS.to_string(),
    };
    c.options(&options);
    // A server that vanished without closing (network cut) is noticed in ~1 min.
    c.keepalives_idle(Duration::from_secs(30));
    c.keepalives_interval(Duration::from_secs(10));
    c.keepalives_retries(3);
    Ok(c)
}

/// The URL with the password (in the user part or a `password=` parameter)
/// replaced by `****`. Works on malformed URLs too: it is what error messages show.
pub fn mask(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme) = out.find("://") {
        let start = scheme + 3;
        let end = out[start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@') {
            if let Some(colon) = out[start..start + at].find(':') {
                out.replace_range(start + colon + 1..start + at, "****");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let query: Vec<&str> = out[q + 1..]
            .split('&')
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=****"
                } else {
                    kv
                }
            })
            .collect();
        out = format!("{}?{}", &out[..q], query.join("&"));
    }
    out
}

/// What an error of the client means for jobd.
fn classify(e: pg::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let message = format!("{} ({code})", db.message());
        return match &code[..2] {
            // Connection exceptions, the server shutting down or starting up,
            // out of connections or space: it may answer later. 25P03 is the
            // commit guard ending a session that idled inside a transaction
            // (a frozen node): its retry re-claims and learns if it was fenced.
            "08" | "57" | "53" => StoreError::Unavailable(message),
            _ if code == "25P03" => StoreError::Unavailable(message),
            _ => StoreError::Database(message),
        };
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Database(e.to_string())
    }
}

impl From<pg::Error> for StoreError {
    fn from(e: pg::Error) -> Self {
        classify(e)
    }
}

#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    rt: Handle,
    /// False since a call found the server unreachable, until one succeeds.
    available: AtomicBool,
    node: cluster::Node,
    /// [`jobs::guard`] for commits: twice the lease, at least [`MIN_GUARD`] — a
    /// commit never legitimately takes that long.
    guard: String,
}

impl PgStore {
    fn node(&self) -> &cluster::Node {
        &self.inner.node
    }

    /// Runs `f` on the daemon's runtime, from a blocking thread.
    fn run<T, E>(&self, f: impl Future<Output = Result<T, E>>) -> Result<T, E>
    where
        E: From<StoreError> + Unavailability,
    {
        let r = self.inner.rt.block_on(async {
            match tokio::time::timeout(CALL_TIMEOUT, f).await {
                Ok(r) => r,
                Err(_) => Err(E::from(StoreError::Unavailable(format!(
                    "PostgreSQL did not answer within {} s",
                    CALL_TIMEOUT.as_secs()
                )))),
            }
        });
        match &r {
            Ok(_) => self.inner.available.store(true, Ordering::Relaxed),
            Err(e) if e.is_unavailable() => self.inner.available.store(false, Ordering::Relaxed),
            Err(_) => {}
        }
        r
    }

    /// A pooled connection.
    async fn client(&self) -> Result<Object, StoreError> {
        use deadpool_postgres::PoolError;
        self.inner.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => classify(e),
            PoolError::Timeout(_) => {
                StoreError::Unavailable("no connection to PostgreSQL could be made".into())
            }
            e => StoreError::Unavailable(e.to_string()),
        })
    }
}

/// Errors that may mean "try again later".
trait Unavailability {
    fn is_unavailable(&self) -> bool;
}

impl Unavailability for StoreError {
    fn is_unavailable(&self) -> bool {
        StoreError::is_unavailable(self)
    }
}

impl Unavailability for CommitError {
    fn is_unavailable(&self) -> bool {
        matches!(self, CommitError::Store(e) if e.is_unavailable())
    }
}

/// A store URL whose database answered and has jobd's schema, before the daemon's
/// runtime exists.
pub struct Checked {
    config: pg::Config,
}

impl Checked {
    /// Connects, creates or migrates the schema, and returns once that worked.
    /// While the server cannot be reached it waits and retries, saying so; a
    /// server that refuses jobd (wrong password, no such database, a database of
    /// another application, a newer schema) is an error at once.
    pub fn wait_and_check(url: &str) -> Result<Checked, StoreError> {
        let config = config_of(url)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("cannot start a runtime", e))?;
        let mut wait = Duration::from_millis(250);
        loop {
            match rt.block_on(schema::connect_and_migrate(&config)) {
                Ok(()) => return Ok(Checked { config }),
                Err(e) if e.is_unavailable() => {
                    let msg = format!(
                        "waiting for PostgreSQL at {}: {e}; trying again in {} ms",
                        mask(url),
                        wait.as_millis()
                    );
                    tracing::warn!("{msg}");
                    if !tracing::dispatcher::has_been_set() {
                        eprintln!("jobd: {msg}");
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The store, on the current runtime, as the node `settings` names; the node
    /// joins the cluster (heartbeat, leases, notifications).
    pub fn open(self, settings: NodeSettings) -> Result<PgStore, StoreError> {
        let rt = Handle::try_current()
            .map_err(|_| StoreError::Config("the PostgreSQL store needs a runtime".into()))?;
        let listen_config = self.config.clone();
        let manager = Manager::from_config(
            self.config,
            pg::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Config(format!("cannot build the connection pool: {e}")))?;
        let guard = jobs::guard((settings.lease * 2).max(MIN_GUARD));
        let (node, events) = cluster::Node::new(settings);
        let store = PgStore {
            inner: Arc::new(Inner {
                pool,
                rt,
                available: AtomicBool::new(true),
                node,
                guard,
            }),
        };
        cluster::start(&store, listen_config, events);
        Ok(store)
    }
}

impl Source for PgStore {
    fn input(&self, input: &str) -> Result<Box<dyn Input>, StoreError> {
        Ok(Box::new(blobs::UploadInput::open(self, input)?))
    }

    fn export_plan(&self, owner: Owner<'_>, from: Day, to: Day) -> Result<ExportPlan, StoreError> {
        self.run(async { export::plan(&self.client().await?, owner, from, to).await })
    }

    fn day_records(&self, q: &DayQuery<'_>, out: &mut Vec<DayRecord>) -> Result<(), StoreError> {
        self.run(async { export::day_records(&self.client().await?, q, out).await })
    }

    fn columns_of(&self, job_seq: i64) -> Result<Vec<String>, StoreError> {
        self.run(async { export::columns_of(&self.client().await?, job_seq).await })
    }
}

impl Store for PgStore {
    fn recover(&self) -> Result<Vec<JobRow>, StoreError> {
        let rows = self.run(async { jobs::load_all(&self.client().await?).await })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if row.state == StoredState::Terminating {
                tracing::info!(job = %row.id, "finishing an interrupted terminate");
                self.finish_terminate(row.seq)?;
                out.push(self.load_job(row.seq)?);
            } else {
                out.push(row);
            }
        }
        Ok(out)
    }

    fn insert_job(&self, job: &NewJob<'_>) -> Result<JobRow, StoreError> {
        self.run(async { jobs::insert(&self.client().await?, job, job.input).await })
    }

    fn create_upload(&self) -> Result<Box<dyn Upload>, StoreError> {
        Ok(Box::new(blobs::PgUpload::create(self.clone())?))
    }

    fn load_job(&self, seq: i64) -> Result<JobRow, StoreError> {
        self.run(async { jobs::load(&self.client().await?, seq).await })
    }

    fn set_state(
        &self,
        seq: i64,
        state: StoredState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            jobs::set_state(&tx, seq, state, error).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Only if no other node holds the job (its lease still good): else `Fenced`.
    fn claim(&self, seq: i64, after: Option<&Claim>) -> Result<(JobRow, Claim), StoreError> {
        let s = &self.node().settings;
        let after = after.map(|c| c.epoch);
        let claimed = self.run(async {
            jobs::claim(&mut self.client().await?, seq, &s.name, s.lease, after).await
        })?;
        let (job, epoch) = claimed.ok_or(StoreError::Fenced(seq))?;
        self.node().claimed.notify_one();
        Ok((job, Claim { seq, epoch }))
    }

    fn release(
        &self,
        claim: &Claim,
        state: StoredState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(&self.inner.guard).await?;
            jobs::lock_claimed(&tx, claim.seq, claim.epoch).await?;
            jobs::set_state(&tx, claim.seq, state, error).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn commit(
        &self,
        claim: &Claim,
        batch: &mut Batch,
        seal: &Seal<'_>,
        interrupt: &AtomicBool,
    ) -> Result<Progress, CommitError> {
        batch.sort_records_by_day();
        self.run(async {
            let client = self.client().await?;
            effects::commit(client, claim, batch, seal, interrupt, &self.inner.guard).await
        })
    }

    fn terminate(&self, seq: i64, expect: Expect<'_>) -> Result<bool, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            effects::terminate(&mut client, seq, expect).await
        })
    }

    fn effects(&self, seq: i64, names: usize) -> Result<Effects, StoreError> {
        self.run(async { effects::effects(&mut self.client().await?, seq, names).await })
    }

    fn revert(&self, seq: i64, from: &[JobState], at: u64) -> Result<bool, StoreError> {
        self.run(async { effects::revert(&mut self.client().await?, seq, from, at).await })
    }

    fn prune(&self, q: &PruneQuery<'_>) -> Result<Vec<Forgotten>, StoreError> {
        self.run(async { effects::prune(&mut self.client().await?, q).await })
    }

    fn transition(&self, seq: i64, from: JobState, to: JobState) -> Result<bool, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let moved = jobs::transition(&tx, seq, from, to).await?;
            tx.commit().await?;
            Ok(moved)
        })
    }

    fn row_errors(&self, seq: i64, after: u64, limit: usize) -> Result<Vec<RowError>, StoreError> {
        self.run(async { jobs::row_errors(&self.client().await?, seq, after, limit).await })
    }

    fn output(&self, seq: i64) -> Result<Box<dyn Reader>, StoreError> {
        Ok(Box::new(blobs::OutputReader::open(self, seq)?))
    }

    fn is_available(&self) -> bool {
        self.inner.available.load(Ordering::Relaxed)
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking() {
        assert_eq!(mask("postgres://u:p@h/d"), "postgres://u:****@h/d");
        assert_eq!(mask("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            mask("postgres://u:p%40x@h:1/d?a=b"),
            "postgres://u:****@h:1/d?a=b"
        );
        assert_eq!(
            mask("postgres://u@h/d?a=1&password=x&b=2"),
            "postgres://u@h/d?a=1&password=****&b=2"
        );
        assert_eq!(mask("postgres://h/d"), "postgres://h/d");
    }

    /// What a session of ours runs with, as the server reports it; `None`
    /// without a server (a failure under `CI=true`).
    fn plan_cache_mode(query: &str) -> Option<String> {
        let server = std::env::var("JOBD_TEST_PG")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_string());
        let url = format!("{}/postgres{query}", server.trim_end_matches('/'));
        let config = config_of(&url).expect("a valid URL");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (client, conn) = match config.connect(pg::NoTls).await {
                Ok(c) => c,
                Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                    panic!("PostgreSQL is needed and not reachable at {url}: {e}")
                }
                Err(e) => {
                    eprintln!("skipped: PostgreSQL not reachable at {url}: {e}");
                    return None;
                }
            };
            tokio::spawn(conn);
            let row = client
                .query_one("SHOW plan_cache_mode", &[])
                .await
                .expect("SHOW");
            Some(row.get(0))
        })
    }

    #[test]
    fn sessions_plan_each_execution_unless_the_url_says_otherwise() {
        let Some(mode) = plan_cache_mode("") else {
            return;
        };
        assert_eq!(mode, "force_custom_plan");
        let own = plan_cache_mode("?options=-c%20plan_cache_mode%3Dauto");
        assert_eq!(own.as_deref(), Some("auto"));
    }
}
