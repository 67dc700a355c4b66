//! `GET /updateTask?id=ID&action=stop|start|terminate`.
//!
//! Checks in the original's order: the id (trimmed, non-empty: `invalid_id`), then
//! (by the daemon, in that order) the job's existence for this caller
//! (`id_doesn't_exist`), then the action (`invalid_action`). A finished job answers
//! 404 `id_doesn't_exist` here, as the original did. Ids the daemon said can
//! never exist are answered without asking it again (see [`super::cache`]).

use super::reply::{self, Routes};
use super::{query, Shared};
use crate::jobctl::render::control_line;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use jobd_protocol::ErrorCode;
use std::time::SystemTime;

pub async fn update_task(State(app): State<Shared>, uri: Uri) -> Response {
    let q = uri.query();
    let id = query::first(q, "id").unwrap_or_default();
    let id = id.trim();
    if id.is_empty() {
        return reply::error(StatusCode::BAD_REQUEST, "invalid_id");
    }
    let action = query::first(q, "action").unwrap_or_default();
    let action = action.trim();
    let cache = app.missing.as_deref();
    if cache.is_some_and(|c| c.is_missing(id)) {
        return reply::error(StatusCode::NOT_FOUND, ErrorCode::IdDoesntExist.as_str());
    }
    let generation = cache.map(|c| c.generation());
    let asked_at = SystemTime::now();
    match app.pool.control(id, action).await {
        Ok(info) => reply::json(
            StatusCode::OK,
            reply::one_field("status", &control_line(&info, action)),
        ),
        Err(e) => {
            if let (Some(cache), Some(g)) = (cache, generation) {
                if e.code() == Some(ErrorCode::IdDoesntExist) {
                    cache.remember(id, g, asked_at);
                }
            }
            reply::client_error(Routes::Legacy, &e)
        }
    }
}
