//! The read routes beside the legacy ones (see `docs/openapi.yaml`):
//! `GET /jobs`, `GET /jobs/{id}`, `GET /jobs/{id}/output`, `GET /jobs/{id}/errors`
//! and `GET /healthz`. Jobs are rendered exactly as `jobctl --json status` renders
//! them. Errors are `{"errorType":"<code>"}` with 400, 403, 404, 409 or 503.

use super::reply::{self, Routes};
use super::Shared;
use crate::jobctl::render::{job_json, row_errors_json};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::Response;
use futures_util::stream;
use jobd_protocol::{Client, ClientError, ErrorCode, JobInfo, Request, Response as Answer};
use serde_json::Value;
use std::io;
use std::sync::Arc;

/// `GET /jobs`: the caller's jobs, oldest first.
pub async fn list(State(app): State<Shared>) -> Response {
    match app.pool.status(&[]).await {
        Ok(jobs) => reply::json_value(
            StatusCode::OK,
            &Value::Array(jobs.iter().map(job_json).collect()),
        ),
        Err(e) => reply::client_error(Routes::Jobs, &e),
    }
}

/// `GET /jobs/{id}`: one job.
pub async fn get(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    match one(&app, &id).await {
        Ok(job) => reply::json_value(StatusCode::OK, &job_json(&job)),
        Err(e) => reply::client_error(Routes::Jobs, &e),
    }
}

async fn one(app: &super::App, id: &str) -> Result<JobInfo, ClientError> {
    let ids = [id.to_string()];
    let jobs = app.pool.status(&ids).await?;
    jobs.into_iter().next().ok_or_else(|| ClientError::Daemon {
        code: ErrorCode::IdDoesntExist,
        message: format!("no job {id}"),
    })
}

/// Row errors a page of `GET /jobs/{id}/errors?after=&limit=` has by default.
const ERRORS_PAGE: u32 = 100;

/// `GET /jobs/{id}/errors`: the job's row errors, `[{"row":N,"message":"..."}]`;
/// one page of them with `after` (a row) and/or `limit` (at most 500).
pub async fn errors(State(app): State<Shared>, Path(id): Path<String>, uri: Uri) -> Response {
    let after = super::query::first(uri.query(), "after");
    let limit = super::query::first(uri.query(), "limit");
    let result = if after.is_some() || limit.is_some() {
        let after = after.map_or(Ok(0), |a| a.trim().parse::<u64>());
        let limit = limit.map_or(Ok(ERRORS_PAGE), |l| l.trim().parse::<u32>());
        match (after, limit) {
            (Ok(after), Ok(limit)) if (1..=500).contains(&limit) => {
                app.pool.errors_page(&id, after, limit).await
            }
            _ => return reply::error(StatusCode::BAD_REQUEST, "bad_request"),
        }
    } else {
        app.pool.errors(&id).await
    };
    match result {
        Ok(errors) => reply::json_value(StatusCode::OK, &row_errors_json(&errors)),
        Err(e) => reply::client_error(Routes::Jobs, &e),
    }
}

/// `GET /healthz`: 200 when the daemon answers a ping, else 503.
pub async fn healthz(State(app): State<Shared>) -> Response {
    match app.pool.ping().await {
        Ok(()) => reply::json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}")),
        Err(e) => reply::client_error(Routes::Jobs, &e),
    }
}

/// `GET /jobs/{id}/output`: the export file of a completed export, streamed as
/// `text/csv` while the daemon sends it (never held whole in memory).
pub async fn output(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let req = Request::Output { id: id.clone() };
    let (client, first) = match app.pool.open(&req).await {
        Ok(v) => v,
        Err(e) => return reply::client_error(Routes::Jobs, &e),
    };
    let (client, first) = match first {
        Answer::Error { code, message } => {
            app.pool.give_back(client);
            return reply::client_error(Routes::Jobs, &ClientError::Daemon { code, message });
        }
        Answer::Chunk { data } => (Some(client), Some(Bytes::from(data))),
        // An empty file: the conversation is already over.
        Answer::End { count: 0 } => {
            app.pool.give_back(client);
            (None, None)
        }
        other => {
            return reply::client_error(
                Routes::Jobs,
                &ClientError::Unexpected(format!("{other:?}")),
            )
        }
    };
    let state = OutputStream {
        client,
        pool: Arc::clone(&app.pool),
        pending: first,
        received: 0,
    };
    let body = Body::from_stream(stream::unfold(state, OutputStream::next));
    let mut resp = reply::with_type(StatusCode::OK, "text/csv; charset=utf-8", body);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.csv\"")) {
        resp.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    debug_assert!(resp.headers().contains_key(CONTENT_TYPE));
    resp
}

/// The rest of an output conversation, as a body stream. An error ends the body
/// early, so the client sees a truncated (not a falsely complete) download.
struct OutputStream {
    /// `None` once the conversation is over.
    client: Option<Client>,
    pool: Arc<super::Pool>,
    /// The first chunk, read before the answer's head was sent.
    pending: Option<Bytes>,
    received: u64,
}

impl OutputStream {
    async fn next(mut self) -> Option<(io::Result<Bytes>, OutputStream)> {
        if let Some(data) = self.pending.take() {
            self.received += data.len() as u64;
            return Some((Ok(data), self));
        }
        let mut client = self.client.take()?;
        match client.recv().await {
            Ok(Answer::Chunk { data }) => {
                self.received += data.len() as u64;
                self.client = Some(client);
                Some((Ok(Bytes::from(data)), self))
            }
            Ok(Answer::End { count }) if count == self.received => {
                self.pool.give_back(client);
                None
            }
            Ok(other) => Some((
                Err(io::Error::other(format!("output ended with {other:?}"))),
                self,
            )),
            Err(e) => Some((Err(io::Error::other(e.to_string())), self)),
        }
    }
}
