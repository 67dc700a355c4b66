//! `POST /jobs/{id}/stop`, `/start`, `/terminate`, `/revert`: 200 with the job as
//! `GET /jobs/{id}` shows it once the action took effect (a stop answers once the
//! job is parked); the daemon's refusals as the read routes map them (404, 403,
//! 409, 504...). `POST /jobs/{id}/revert?dry_run=true` answers what a revert would
//! undo instead, changing nothing. A form posted by a browser without JavaScript
//! (it asks for HTML) is sent back to the job's page instead.

use super::reply::{self, Routes};
use super::{query, ui, Shared};
use crate::jobctl::render::{job_json, undo_json};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

pub async fn stop(State(app): State<Shared>, Path(id): Path<String>, h: HeaderMap) -> Response {
    control(&app, &id, "stop", &h).await
}

pub async fn start(State(app): State<Shared>, Path(id): Path<String>, h: HeaderMap) -> Response {
    control(&app, &id, "start", &h).await
}

pub async fn terminate(
    State(app): State<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    control(&app, &id, "terminate", &h).await
}

async fn control(app: &super::App, id: &str, action: &str, headers: &HeaderMap) -> Response {
    let result = app.pool.control(id, action).await;
    if ui::wants_html(headers) {
        let error = result.as_ref().err().map(ui::error_code);
        return ui::see_job(id, error);
    }
    match result {
        Ok(info) => reply::json_value(StatusCode::OK, &job_json(&info)),
        Err(e) => reply::client_error(Routes::Jobs, &e),
    }
}

pub async fn revert(
    State(app): State<Shared>,
    Path(id): Path<String>,
    uri: Uri,
    h: HeaderMap,
) -> Response {
    let dry_run = match query::first(uri.query(), "dry_run")
        .as_deref()
        .map(str::trim)
    {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => return reply::error(StatusCode::BAD_REQUEST, "bad_request"),
    };
    let result = app.pool.revert(&id, dry_run).await;
    if ui::wants_html(&h) && !dry_run {
        let error = result.as_ref().err().map(ui::error_code);
        return ui::see_job(&id, error);
    }
    match result {
        Ok(Ok(info)) => reply::json_value(StatusCode::OK, &job_json(&info)),
        Ok(Err(summary)) => reply::json_value(StatusCode::OK, &undo_json(&summary, "revert")),
        Err(e) => reply::client_error(Routes::Jobs, &e),
    }
}
