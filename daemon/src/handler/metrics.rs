//! `Metrics`: the daemon's counters ([`crate::metrics`]) and its jobs by kind and
//! state, in one answer. Counts cover every job of the daemon, whoever owns it;
//! they are numbers only.

use super::Context;
use crate::connection::{ConnError, Connection};
use jobd_protocol::Response;

pub async fn handle(conn: &mut Connection, ctx: &Context) -> Result<(), ConnError> {
    let jobs = ctx.registry.job_counts();
    let snapshot = ctx.registry.metrics().snapshot(jobs);
    conn.send(&Response::Metrics(snapshot)).await
}
