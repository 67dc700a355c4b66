//! Nodes sharing one database: registration and heartbeat, leases and their
//! renewal, claims of queued (or abandoned) work, controls for jobs another node
//! runs, and the changes of every job heard through `LISTEN`.
//!
//! A node holds a lease on each job it runs; the keeper renews them well within
//! the lease while the node lives. Another node claims a running job only once
//! its lease ran out; the claim raises the job's epoch, which every commit of the
//! old holder checks (fencing), so a node that was frozen or cut off past its
//! lease can never commit again.

use super::{jobs, PgStore};
use crate::store::{Claim, Cluster, Event, JobRow, NodeSettings, StoreError, StoredState};
use futures_util::StreamExt;
use jobd_protocol::{Action, JobState, NodeInfo};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_postgres as pg;

/// The heartbeat of a node that runs nothing.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(15);
/// Changes buffered for the registry; past this it is told to resynchronize.
const EVENTS: usize = 4096;
/// Jobs loaded per query when many changed at once.
const LOAD_BATCH: usize = 512;

/// The cluster state of a PostgreSQL store.
pub struct Node {
    pub settings: NodeSettings,
    /// The registry's end of the changes, until it takes it.
    events: Mutex<Option<mpsc::Receiver<Event>>>,
    /// Raised when this node claims a job: its leases need renewing from now on.
    pub claimed: Notify,
}

impl Node {
    pub fn new(settings: NodeSettings) -> (Node, mpsc::Sender<Event>) {
        let (tx, rx) = mpsc::channel(EVENTS);
        (
            Node {
                settings,
                events: Mutex::new(Some(rx)),
                claimed: Notify::new(),
            },
            tx,
        )
    }
}

/// Joins the cluster: registers the node and starts its keeper and listener.
pub fn start(store: &PgStore, config: pg::Config, events: mpsc::Sender<Event>) {
    let rt = store.inner.rt.clone();
    rt.spawn(keep(store.clone()));
    rt.spawn(listen(store.clone(), config, events));
}

/// Registers the node, then renews its leases (every third of a lease while it
/// runs something) and its heartbeat (also while idle, less often).
async fn keep(store: PgStore) {
    let s = &store.node().settings;
    let started = crate::store::now_ms() as i64;
    let mut registered = false;
    loop {
        let renewed = async {
            let c = store.client().await?;
            if !registered {
                c.execute(
                    "INSERT INTO jobd.nodes (name, started_at, heartbeat_at, max_running)
                     VALUES ($1, $2, now(), $3)
                     ON CONFLICT (name) DO UPDATE SET started_at = $2, heartbeat_at = now(),
                         max_running = $3, stopped = false",
                    &[&s.name, &started, &(s.max_running as i32)],
                )
                .await?;
                registered = true;
            }
            let n = c
                .execute(
                    "UPDATE jobd.jobs SET lease_until = now() + $2::text::interval
                     WHERE node = $1 AND state = 'running'",
                    &[&s.name, &jobs::interval(s.lease)],
                )
                .await?;
            c.execute(
                "UPDATE jobd.nodes SET heartbeat_at = now() WHERE name = $1",
                &[&s.name],
            )
            .await?;
            Ok::<_, StoreError>(n)
        }
        .await;
        let wait = match renewed {
            Ok(0) => IDLE_HEARTBEAT,
            Ok(_) => s.lease / 3,
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew this node's leases");
                s.lease / 6
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = store.node().claimed.notified() => {}
        }
    }
}

/// Listens to every job's changes on a connection of its own (notifications come
/// only to a connection that is polled, never through the pool), loads the jobs
/// that changed, and hands them on. After a lost connection: reconnects, and tells
/// the registry to resynchronize.
async fn listen(store: PgStore, config: pg::Config, events: mpsc::Sender<Event>) {
    let mut wait = Duration::from_millis(100);
    let mut first = true;
    loop {
        match listen_once(&store, &config, &events, first).await {
            Ok(()) => return,
            Err(e) => {
                if events.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "lost the store's notifications; listening again");
            }
        }
        first = false;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    store: &PgStore,
    config: &pg::Config,
    events: &mpsc::Sender<Event>,
    first: bool,
) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect(pg::NoTls).await?;
    let (heard_tx, mut heard) = mpsc::unbounded_channel::<i64>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(pg::AsyncMessage::Notification(n)) => {
                    if let Ok(seq) = n.payload().parse::<i64>() {
                        if heard_tx.send(seq).is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute("LISTEN jobd_jobs").await?;
    if !first {
        // Whatever changed while nobody listened is only in the tables.
        if events.send(Event::Resync).await.is_err() {
            return Ok(());
        }
    }
    let mut pending = BTreeSet::new();
    loop {
        // Every seq heard so far, then one load for all of them.
        match heard.recv().await {
            Some(seq) => {
                pending.insert(seq);
            }
            None => break,
        }
        while let Ok(seq) = heard.try_recv() {
            pending.insert(seq);
        }
        while !pending.is_empty() {
            let batch: Vec<i64> = pending.iter().take(LOAD_BATCH).copied().collect();
            for seq in &batch {
                pending.remove(seq);
            }
            let (gone, changed): (Vec<i64>, Vec<i64>) = batch.iter().partition(|&&s| s < 0);
            let rows = match changed.is_empty() {
                true => Vec::new(),
                false => jobs::load_many(&store.client().await?, &changed).await?,
            };
            let found: BTreeSet<i64> = rows.iter().map(|r| r.seq).collect();
            let missing = changed.iter().filter(|s| !found.contains(s)).copied();
            let gone: Vec<i64> = gone.iter().map(|s| -s).chain(missing).collect();
            if !gone.is_empty() && events.send(Event::Gone(gone)).await.is_err() {
                return Ok(());
            }
            for row in rows {
                if events.send(Event::Job(Box::new(row))).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    match driver.await {
        Ok(Ok(())) => Err(StoreError::Unavailable(
            "the notification connection closed".into(),
        )),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "the listener stopped: {e}"
        ))),
    }
}

impl Cluster for PgStore {
    fn node(&self) -> &NodeSettings {
        &self.node().settings
    }

    fn claim_next(&self) -> Result<Option<(JobRow, Claim)>, StoreError> {
        let s = &self.node().settings;
        loop {
            let next = self.run(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .await?;
                let stmt = tx
                    .prepare_cached(
                        "SELECT seq, control FROM jobd.jobs
                          WHERE state = 'queued'
                             OR (state = 'running'
                                 AND (node IS NULL OR (node <> $1 AND lease_until < now())))
                          ORDER BY seq FOR UPDATE SKIP LOCKED LIMIT 1",
                    )
                    .await?;
                let Some(row) = tx.query_opt(&stmt, &[&s.name]).await? else {
                    return Ok(None);
                };
                let seq: i64 = row.get(0);
                let control: Option<String> = row.get(1);
                let pending = control.as_deref().and_then(Action::parse);
                if pending.is_some() {
                    // Fences a worker of the node that held it (frozen, say),
                    // as a claim would.
                    tx.execute(
                        "UPDATE jobd.jobs SET epoch = epoch + 1 WHERE seq = $1",
                        &[&seq],
                    )
                    .await?;
                }
                let outcome = match pending {
                    // A stop asked of a node that died before obeying holds.
                    Some(Action::Stop) => {
                        jobs::set_state(&tx, seq, StoredState::Public(JobState::Paused), None)
                            .await?;
                        Next::Parked
                    }
                    Some(Action::Terminate) => {
                        jobs::set_state(&tx, seq, StoredState::Terminating, None).await?;
                        Next::Terminate(seq)
                    }
                    _ => match jobs::claim_in(&tx, seq, &s.name, s.lease, None).await? {
                        Some((job, epoch)) => Next::Run(Box::new((job, Claim { seq, epoch }))),
                        None => Next::Parked,
                    },
                };
                tx.commit().await?;
                Ok::<_, StoreError>(Some(outcome))
            })?;
            match next {
                None => return Ok(None),
                Some(Next::Run(claimed)) => {
                    self.node().claimed.notify_one();
                    return Ok(Some(*claimed));
                }
                Some(Next::Parked) => {}
                Some(Next::Terminate(seq)) => self.finish_terminate(seq)?,
            }
        }
    }

    fn request_control(&self, seq: i64, action: Action) -> Result<bool, StoreError> {
        self.run(async {
            let n = self
                .client()
                .await?
                .execute(
                    "UPDATE jobd.jobs SET control = $2 WHERE seq = $1 AND state = 'running'",
                    &[&seq, &action.as_str()],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn find_job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.run(async { jobs::find(&self.client().await?, id).await })
    }

    fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        self.run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT n.name, n.started_at,
                            (extract(epoch FROM now() - n.heartbeat_at) * 1000)::bigint,
                            (SELECT count(*) FROM jobd.jobs j
                              WHERE j.node = n.name AND j.state = 'running'),
                            n.max_running, n.stopped
                       FROM jobd.nodes n ORDER BY n.name",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| NodeInfo {
                    name: r.get(0),
                    started_at: r.get::<_, i64>(1) as u64,
                    heartbeat_age_ms: r.get::<_, i64>(2).max(0) as u64,
                    running: r.get::<_, i64>(3) as u32,
                    max_running: r.get::<_, i32>(4) as u32,
                    stopped: r.get(5),
                })
                .collect())
        })
    }

    fn release_all(&self) -> Result<(), StoreError> {
        let s = &self.node().settings;
        self.run(async {
            release(&self.client().await?, &s.name).await?;
            Ok(())
        })
    }

    fn leave(&self) -> Result<(), StoreError> {
        let s = &self.node().settings;
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            release(&tx, &s.name).await?;
            tx.execute(
                "UPDATE jobd.nodes SET stopped = true, heartbeat_at = now() WHERE name = $1",
                &[&s.name],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn next_expiry(&self) -> Result<Option<Duration>, StoreError> {
        let s = &self.node().settings;
        self.run(async {
            let row = self
                .client()
                .await?
                .query_one(
                    "SELECT (extract(epoch FROM min(lease_until) - now()) * 1000)::bigint
                       FROM jobd.jobs WHERE state = 'running' AND node <> $1",
                    &[&s.name],
                )
                .await?;
            let ms: Option<i64> = row.get(0);
            Ok(ms.map(|ms| Duration::from_millis(ms.max(0) as u64)))
        })
    }

    fn events(&self) -> Option<mpsc::Receiver<Event>> {
        self.node().events.lock().ok()?.take()
    }
}

/// Puts the node's running jobs back in the queue. The epoch fences a worker of
/// this node that would still commit; the pending control stays, for the claimer.
async fn release(c: &impl deadpool_postgres::GenericClient, node: &str) -> Result<u64, StoreError> {
    Ok(c.execute(
        "UPDATE jobd.jobs SET state = 'queued', node = NULL, lease_until = NULL,
             epoch = epoch + 1, updated_at = $2
         WHERE node = $1 AND state = 'running'",
        &[&node, &(crate::store::now_ms() as i64)],
    )
    .await?)
}

/// What the claimer found.
enum Next {
    Run(Box<(JobRow, Claim)>),
    /// Parked (a pending stop) or taken by another node meanwhile: look again.
    Parked,
    /// Marked terminating (a pending terminate): roll it back, then look again.
    Terminate(i64),
}

impl PgStore {
    /// The rollback of a job marked `terminating`.
    pub(super) fn finish_terminate(&self, seq: i64) -> Result<(), StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            super::effects::undo_and_end(&mut client, seq).await
        })
    }
}
