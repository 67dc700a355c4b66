//! One handler per request. Each writes its own answer frames; an `Err` means the
//! connection cannot go on and is closed.

mod control;
mod errors;
mod errors_page;
mod events;
mod metrics;
mod nodes;
mod output;
mod ping;
mod preview_terminate;
mod prune;
mod revert;
mod status;
mod submit_export;
mod submit_upload;
mod wait;
mod watch;

use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal, Registry};
use crate::store::StoreError;
use jobd_protocol::{ErrorCode, Request, Response};
use std::sync::Arc;

/// What every handler may use.
pub struct Context {
    pub registry: Arc<Registry>,
    pub max_upload_bytes: u64,
}

/// Frames of a list are sent in pages of this many items.
const PAGE: usize = 500;

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    req: Request,
) -> Result<(), ConnError> {
    match req {
        Request::Ping => ping::handle(conn).await,
        Request::SubmitUpload { kind, rate } => {
            submit_upload::handle(conn, ctx, caller, kind, rate).await
        }
        Request::SubmitExport { from, to, rate } => {
            submit_export::handle(conn, ctx, caller, &from, &to, rate).await
        }
        Request::Control { id, action } => control::handle(conn, ctx, caller, &id, &action).await,
        Request::Status { ids } => status::handle(conn, ctx, caller, &ids).await,
        Request::Watch { id } => watch::handle(conn, ctx, caller, &id).await,
        Request::Wait { ids } => wait::handle(conn, ctx, caller, &ids).await,
        Request::Output { id } => output::handle(conn, ctx, caller, &id).await,
        Request::Errors { id } => errors::handle(conn, ctx, caller, &id).await,
        Request::Events => events::handle(conn, ctx, caller).await,
        Request::Metrics => metrics::handle(conn, ctx).await,
        Request::Nodes => nodes::handle(conn, ctx).await,
        Request::ErrorsPage { id, after, limit } => {
            errors_page::handle(conn, ctx, caller, &id, after, limit).await
        }
        Request::Revert { id, dry_run } => revert::handle(conn, ctx, caller, &id, dry_run).await,
        Request::PreviewTerminate { id } => preview_terminate::handle(conn, ctx, caller, &id).await,
        Request::Prune {
            older_than_ms,
            states,
        } => prune::handle(conn, ctx, caller, older_than_ms, &states).await,
        Request::Hello { .. } | Request::Chunk { .. } | Request::End { .. } => {
            refuse(
                conn,
                Refusal::new(
                    ErrorCode::BadRequest,
                    "unexpected frame: no request in progress",
                ),
            )
            .await
        }
    }
}

/// Answers with an error; the connection goes on.
async fn refuse(conn: &mut Connection, r: Refusal) -> Result<(), ConnError> {
    conn.send(&Response::Error {
        code: r.code,
        message: r.message,
    })
    .await
}

/// Runs a store call on a blocking thread (the store blocks).
async fn store_call<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Refusal::storage),
        Err(e) => Err(Refusal::new(
            ErrorCode::Internal,
            format!("store task failed: {e}"),
        )),
    }
}

/// Checks a per-job rate: units per second, positive and finite.
fn check_rate(rate: Option<f64>) -> Result<Option<f64>, Refusal> {
    match rate {
        Some(r) if !(r.is_finite() && r > 0.0 && r <= 1e9) => Err(Refusal::new(
            ErrorCode::InvalidRate,
            format!("rate must be a positive number of units per second, not {r}"),
        )),
        r => Ok(r),
    }
}
