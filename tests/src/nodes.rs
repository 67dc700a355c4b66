//! Several real `jobd` nodes on one PostgreSQL database: each with its own socket
//! and state directory, `--node n1`, `n2`, ..., all with the same `--store`. The
//! database is created for the cluster and dropped after every node is gone.

use crate::backend::PgDatabase;
use crate::daemon::is_finished;
use crate::{Daemon, DEADLINE, POLL};
use serde_json::Value;
use std::thread;
use std::time::{Duration, Instant};

pub struct Nodes {
    /// Dropped first (killing every node), then the database.
    pub nodes: Vec<Daemon>,
    _db: Option<PgDatabase>,
    url: String,
}

impl Nodes {
    /// `n` nodes on a fresh database, each started with `extra` flags.
    pub fn start(n: usize, extra: &[&str]) -> Nodes {
        let db = PgDatabase::create();
        let url = db.url();
        Nodes::start_on(n, &url, Some(db), extra)
    }

    /// `n` nodes on the database at `url` (which the caller keeps).
    pub fn start_on_url(n: usize, url: &str, extra: &[&str]) -> Nodes {
        Nodes::start_on(n, url, None, extra)
    }

    fn start_on(n: usize, url: &str, db: Option<PgDatabase>, extra: &[&str]) -> Nodes {
        let nodes = (1..=n)
            .map(|i| {
                let name = format!("n{i}");
                let mut args = vec!["--node", name.as_str()];
                args.extend_from_slice(extra);
                Daemon::start_on_url(url, &args)
            })
            .collect();
        Nodes {
            nodes,
            _db: db,
            url: url.to_string(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Node `i`, counting from 0 (named `n{i+1}`).
    pub fn node(&self, i: usize) -> &Daemon {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Daemon {
        &mut self.nodes[i]
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        name.strip_prefix('n')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=self.nodes.len()).contains(n))
            .map(|n| n - 1)
            .unwrap_or_else(|| panic!("no node named {name:?}"))
    }

    /// A node that runs, other than those in `not`.
    pub fn other_than(&self, not: &[usize]) -> usize {
        (0..self.nodes.len())
            .find(|i| !not.contains(i) && self.nodes[*i].is_running())
            .expect("another running node")
    }

    /// Waits until the job runs on some node (as `asked` sees it) and has done
    /// `units`; returns that node's index and the status.
    #[track_caller]
    pub fn wait_running(&self, asked: usize, id: &str, units: u64) -> (usize, Value) {
        let d = &self.nodes[asked];
        let s = d.wait_until(id, "running on a node", DEADLINE, |s| {
            s["state"] == "running" && s["node"].is_string() && crate::crash::units(s) >= units
        });
        let node = s["node"].as_str().expect("node name");
        (self.index_of(node), s)
    }

    /// Polls `asked` until `pred` holds of the job, for at most `timeout`.
    #[track_caller]
    pub fn wait_until(
        &self,
        asked: usize,
        id: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let d = &self.nodes[asked];
        let deadline = Instant::now() + timeout;
        loop {
            let s = d.status_json(id);
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "job {id}: no {what} within {timeout:?} (asking n{}); last {s}\n{}\n{}",
                asked + 1,
                self.sessions(),
                self.logs()
            );
            assert!(!is_finished(&s), "job {id} ended before {what}: {s}");
            thread::sleep(POLL);
        }
    }

    /// Freezes node `i` (SIGSTOP) at a moment when none of jobd's sessions has a
    /// transaction open, so that what it does on waking is a commit of a batch
    /// it read before its lease ran out: the case only the epoch check fences.
    /// A node frozen inside a commit is fenced by the server's guard instead.
    pub fn freeze_between_commits(&self, i: usize) {
        let node = &self.nodes[i];
        for _ in 0..50 {
            node.freeze();
            if self.open_transactions() == 0 {
                thread::sleep(Duration::from_millis(200));
                if self.open_transactions() == 0 {
                    return;
                }
            }
            node.thaw();
            thread::sleep(POLL);
        }
        panic!("n{} was inside a transaction at every try", i + 1);
    }

    /// Sessions of jobd inside a transaction.
    fn open_transactions(&self) -> i64 {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).expect("connect");
        c.query_one(
            "SELECT COUNT(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'jobd'
                AND (backend_xid IS NOT NULL OR state LIKE 'idle in transaction%')",
            &[],
        )
        .expect("query pg_stat_activity")
        .get(0)
    }

    /// The job's row as stored (state, node, epoch, lease), for failure messages.
    pub fn stored_row(&self, id: &str) -> String {
        let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) else {
            return "(the database cannot be reached)".into();
        };
        match c.query_opt(
            "SELECT row_to_json(j)::text, (SELECT json_agg(n)::text FROM jobd.nodes n), now()::text
               FROM jobd.jobs j WHERE id = $1",
            &[&id],
        ) {
            Ok(Some(r)) => format!(
                "{} at {}\nnodes: {}",
                r.get::<_, String>(0),
                r.get::<_, String>(2),
                r.get::<_, Option<String>>(1).unwrap_or_default()
            ),
            Ok(None) => format!("no row for {id}"),
            Err(e) => format!("({e})"),
        }
    }

    /// The database's sessions and the locks they hold, for failure messages.
    pub fn sessions(&self) -> String {
        let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) else {
            return "(the database cannot be reached)".into();
        };
        let rows = c.query(
            "SELECT a.pid::text, a.state, (now() - a.state_change)::text, left(a.query, 80),
                    coalesce(string_agg(l.mode || ' on ' || coalesce(l.relation::regclass::text, l.locktype), ', '), '')
               FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted
              WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
              GROUP BY 1, 2, 3, 4 ORDER BY 1",
            &[],
        );
        let mut out = String::from("===== sessions =====\n");
        for r in rows.unwrap_or_default() {
            let cols: Vec<String> = (0..5)
                .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                .collect();
            out.push_str(&cols.join(" | "));
            out.push('\n');
        }
        out
    }

    /// Every node's logs.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(Daemon::logs).collect()
    }
}
