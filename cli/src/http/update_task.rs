//! `GET /updateTask?id=ID&action=stop|start|terminate`.
//!
//! Checks in the original's order: the id (trimmed, non-empty: `invalid_id`), then
//! (by the daemon, in that order) the job's existence for this caller
//! (`id_doesn't_exist`), then the action (`invalid_action`). A finished job (any
//! final state) answers 404 `id_doesn't_exist` here for every action, valid or
//! not, as the original did once it had forgotten the job: old clients learn that
//! a job ended only so. Ids the daemon said can never exist are answered without
//! asking it again (see [`super::cache`]).
//!
//! [`answer`] is shared by the router's handler and by [`super::fast_path`],
//! which serves this route on plain keep-alive connections without the framework.

use super::reply::{self, Routes};
use super::{query, App, Shared};
use crate::jobctl::render::control_line;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use jobd_protocol::ErrorCode;
use std::time::SystemTime;

pub async fn update_task(State(app): State<Shared>, uri: Uri) -> Response {
    let (status, body) = answer(&app, uri.query()).await;
    reply::json(status, body)
}

/// The status and JSON body answering the raw query `q`.
pub async fn answer(app: &App, q: Option<&str>) -> (StatusCode, Bytes) {
    let id = query::first(q, "id").unwrap_or_default();
    let id = id.trim();
    if id.is_empty() {
        return (StatusCode::BAD_REQUEST, reply::error_body("invalid_id"));
    }
    let action = query::first(q, "action").unwrap_or_default();
    let action = action.trim();
    let cache = app.missing.as_deref();
    if cache.is_some_and(|c| c.is_missing(id)) {
        return (
            StatusCode::NOT_FOUND,
            reply::error_body(ErrorCode::IdDoesntExist.as_str()),
        );
    }
    let generation = cache.map(|c| c.generation());
    let asked_at = SystemTime::now();
    match app.pool.control(id, action).await {
        Ok(info) => (
            StatusCode::OK,
            reply::one_field("status", &control_line(&info, action)),
        ),
        // The daemon checks the action before looking at the state; here a
        // finished job comes first, whatever the action.
        Err(e) if e.code() == Some(ErrorCode::InvalidAction) && finished(app, id).await => (
            StatusCode::NOT_FOUND,
            reply::error_body(ErrorCode::IdDoesntExist.as_str()),
        ),
        Err(e) => {
            if let (Some(cache), Some(g)) = (cache, generation) {
                if e.code() == Some(ErrorCode::IdDoesntExist) {
                    cache.remember(id, g, asked_at);
                }
            }
            reply::client_error_parts(Routes::Legacy, &e)
        }
    }
}

/// Whether the job has ended, as far as the daemon says now (a job gone
/// meanwhile counts too: to this route it does not exist either).
async fn finished(app: &App, id: &str) -> bool {
    match app.pool.status(&[id.to_string()]).await {
        Ok(jobs) => jobs.iter().any(|j| j.state.is_finished()),
        Err(e) => matches!(
            e.code(),
            Some(ErrorCode::IdDoesntExist | ErrorCode::PermissionDenied)
        ),
    }
}
