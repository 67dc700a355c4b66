//! `POST /uploadCSV` and `POST /createBulkTeam`: a multipart form whose `file` part
//! becomes a `baselineCSV` or `bulkTeam` job; `{"Job ID":"<id>"}` on success,
//! 400 `{"errorType":"File not accepted"}` without a usable `file` part.

use super::multipart::{self, UploadFailure};
use super::reply::{self, Routes};
use super::Shared;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use jobd_protocol::UploadKind;

/// The legacy body of an upload without a usable `file` part.
pub const NOT_ACCEPTED: &str = "File not accepted";

pub async fn upload_csv(
    State(app): State<Shared>,
    uri: Uri,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    submit(&app, &uri, form, UploadKind::BaselineCsv).await
}

pub async fn create_bulk_team(
    State(app): State<Shared>,
    uri: Uri,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    submit(&app, &uri, form, UploadKind::BulkTeam).await
}

async fn submit(
    app: &super::App,
    uri: &Uri,
    form: Result<Multipart, MultipartRejection>,
    kind: UploadKind,
) -> Response {
    let rate = match app.rate(uri) {
        Ok(r) => r,
        Err(bad) => return bad.response(),
    };
    // Not multipart/form-data at all (no body, urlencoded, JSON...).
    let Ok(form) = form else {
        return reply::error(StatusCode::BAD_REQUEST, NOT_ACCEPTED);
    };
    match multipart::upload(&app.pool, form, kind, rate).await {
        Ok(info) => super::job_created(&info),
        Err(UploadFailure::NotAccepted | UploadFailure::BadField(_)) => {
            reply::error(StatusCode::BAD_REQUEST, NOT_ACCEPTED)
        }
        Err(UploadFailure::Daemon(e)) => reply::client_error(Routes::Legacy, &e),
    }
}
