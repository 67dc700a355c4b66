//! `Events`: every change of every job the caller may see, pushed by the
//! registry as it happens ([`crate::feed`]), until the client goes away.
//!
//! Progress of a running job can change hundreds of times a second (a throttled
//! job commits each unit); such changes are merged per job over [`COALESCE`], the
//! latest winning. Any other change (a new job, a state change) is sent at once,
//! replacing what was pending for that job, so the order of states is kept.

use super::Context;
use crate::connection::{ConnError, Connection};
use crate::registry::Caller;
use jobd_protocol::{JobInfo, JobState, Response};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// Longest delay of a progress step.
const COALESCE: Duration = Duration::from_millis(100);

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
) -> Result<(), ConnError> {
    // Subscribed before `Ready`: every change after the answer is delivered.
    let mut rx = ctx.registry.feed().subscribe();
    conn.send(&Response::Ready).await?;
    let mut pending: HashMap<String, JobInfo> = HashMap::new();
    let flush_at = tokio::time::sleep(COALESCE);
    tokio::pin!(flush_at);
    loop {
        let change = tokio::select! {
            change = rx.recv() => change,
            () = &mut flush_at, if !pending.is_empty() => {
                for (_, info) in pending.drain() {
                    conn.queue(&Response::Job(info)).await?;
                }
                conn.flush().await?;
                continue;
            }
            // Anything from the client ends the stream; so does its going away.
            _ = conn.closed() => return Err(ConnError::Idle),
        };
        let info = match change {
            Ok(info) => info,
            Err(RecvError::Lagged(missed)) => {
                // The client must read the jobs again: tell it how much it missed.
                return conn.send(&Response::End { count: missed }).await;
            }
            Err(RecvError::Closed) => return Ok(()),
        };
        if !caller.may_see(&info) {
            continue;
        }
        if info.state == JobState::Running {
            if pending.is_empty() {
                flush_at.as_mut().reset(Instant::now() + COALESCE);
            }
            pending.insert(info.id.clone(), info);
        } else {
            pending.remove(&info.id);
            conn.send(&Response::Job(info)).await?;
        }
    }
}
