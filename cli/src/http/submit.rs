//! `POST /jobs`: submit work.
//!
//! - `multipart/form-data` with the fields `kind` (`baselineCSV` or `bulkTeam`),
//!   optionally `rate`, then the file part `file`: an upload, streamed to the daemon
//!   as it arrives, as the legacy routes do (never held whole).
//! - `application/json` `{"from":"YYYY-MM-DD","to":"YYYY-MM-DD","rate":N}` (rate
//!   optional), or the same fields form-encoded: an export.
//!
//! 201 with the job as `GET /jobs/{id}` shows it and `Location: /jobs/{id}`; a
//! form field that is missing or wrong is 400 `bad_request`, a body that is not
//! the JSON above 400 `invalid_json`, the daemon's refusals as the read routes
//! map them. A browser form posted without JavaScript (it asks for HTML) is sent
//! on to the new job's page instead.

use super::multipart::{self, UploadFailure};
use super::reply::{self, Routes};
use super::{query, ui, Shared};
use crate::jobctl::render::job_json;
use axum::body::Bytes;
use axum::extract::multipart::Multipart;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use jobd_protocol::{ClientError, JobInfo};
use serde::Deserialize;

/// Largest export request body.
pub const MAX_EXPORT_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct ExportBody {
    from: String,
    to: String,
    #[serde(default)]
    rate: Option<f64>,
}

enum Failure {
    Status(StatusCode, &'static str),
    Daemon(ClientError),
}

pub async fn submit(State(app): State<Shared>, req: Request) -> Response {
    let headers = req.headers().clone();
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let result = match content_type.as_str() {
        "multipart/form-data" => upload(&app, req).await,
        "application/json" => match read_body(req).await {
            Ok(body) => match serde_json::from_slice::<ExportBody>(&body) {
                Ok(e) => export(&app, &e.from, &e.to, e.rate).await,
                Err(_) => Err(Failure::Status(StatusCode::BAD_REQUEST, "invalid_json")),
            },
            Err(f) => Err(f),
        },
        "application/x-www-form-urlencoded" => match read_body(req).await {
            Ok(body) => {
                let text = String::from_utf8_lossy(&body);
                let field = |k| query::first(Some(&text), k).map(|v| v.into_owned());
                let rate = match field("rate").as_deref().map(str::trim) {
                    None | Some("") => Ok(None),
                    Some(r) => r
                        .parse()
                        .map(Some)
                        .map_err(|_| Failure::Status(StatusCode::BAD_REQUEST, "invalid_rate")),
                };
                match (field("from"), field("to"), rate) {
                    (Some(from), Some(to), Ok(rate)) => export(&app, &from, &to, rate).await,
                    (_, _, Err(f)) => Err(f),
                    _ => Err(Failure::Status(StatusCode::BAD_REQUEST, "bad_request")),
                }
            }
            Err(f) => Err(f),
        },
        _ => Err(Failure::Status(StatusCode::BAD_REQUEST, "bad_request")),
    };
    answer(&headers, result)
}

async fn upload(app: &super::App, req: Request) -> Result<JobInfo, Failure> {
    let form = Multipart::from_request(req, &())
        .await
        .map_err(|_| Failure::Status(StatusCode::BAD_REQUEST, "bad_request"))?;
    multipart::upload_form(&app.pool, form, None, None)
        .await
        .map_err(|e| match e {
            UploadFailure::NotAccepted => Failure::Status(StatusCode::BAD_REQUEST, "bad_request"),
            UploadFailure::BadField(why) => {
                tracing::debug!("POST /jobs refused: {why}");
                Failure::Status(StatusCode::BAD_REQUEST, "bad_request")
            }
            UploadFailure::Daemon(e) => Failure::Daemon(e),
        })
}

async fn export(
    app: &super::App,
    from: &str,
    to: &str,
    rate: Option<f64>,
) -> Result<JobInfo, Failure> {
    app.pool
        .submit_export(from, to, rate)
        .await
        .map_err(Failure::Daemon)
}

async fn read_body(req: Request) -> Result<Bytes, Failure> {
    axum::body::to_bytes(req.into_body(), MAX_EXPORT_BODY)
        .await
        .map_err(|_| Failure::Status(StatusCode::PAYLOAD_TOO_LARGE, "bad_request"))
}

fn answer(headers: &HeaderMap, result: Result<JobInfo, Failure>) -> Response {
    if ui::wants_html(headers) {
        return match result {
            Ok(info) => ui::see_job(&info.id, None),
            Err(Failure::Daemon(e)) => ui::see_list(Some(ui::error_code(&e))),
            Err(Failure::Status(_, code)) => ui::see_list(Some(code)),
        };
    }
    match result {
        Ok(info) => {
            let mut resp = reply::json_value(StatusCode::CREATED, &job_json(&info));
            let location = format!("/jobs/{}", ui::path_segment(&info.id));
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(LOCATION, v);
            }
            resp
        }
        Err(Failure::Status(status, code)) => reply::error(status, code),
        Err(Failure::Daemon(e)) => reply::client_error(Routes::Jobs, &e),
    }
}
