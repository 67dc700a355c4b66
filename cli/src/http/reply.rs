//! Building answers: the legacy service's JSON bodies (byte for byte as Go's
//! `encoding/json` wrote them), error codes mapped to HTTP statuses, and the plain
//! 404 page.

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use jobd_protocol::{ClientError, ErrorCode};

/// The content type Gin's `c.JSON` sets.
pub const JSON_TYPE: &str = "application/json; charset=utf-8";

/// The body of Go's 404 page (`text/plain`, no newline).
pub const NOT_FOUND_BODY: &str = "404 page not found";

/// Code sent when the daemon cannot be reached (or is shutting down).
pub const DAEMON_UNAVAILABLE: &str = "daemon_unavailable";

/// A response with this status, content type and body.
pub fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON response (the body must already be compact JSON).
pub fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    with_type(status, JSON_TYPE, body)
}

/// A JSON value serialized compactly, as a response.
pub fn json_value(status: StatusCode, value: &serde_json::Value) -> Response {
    json(status, Bytes::from(value.to_string()))
}

/// `404 page not found`, `text/plain`: unknown paths and wrong methods.
pub fn not_found() -> Response {
    with_type(StatusCode::NOT_FOUND, "text/plain", NOT_FOUND_BODY)
}

/// `{"errorType":"<code>"}` with `status`. Known codes use a static body.
pub fn error(status: StatusCode, code: &str) -> Response {
    json(status, error_body(code))
}

/// `{"errorType":"<code>"}`.
pub fn error_body(code: &str) -> Bytes {
    macro_rules! known {
        ($($code:literal),* $(,)?) => {
            match code {
                $($code => return Bytes::from_static(
                    concat!("{\"errorType\":\"", $code, "\"}").as_bytes()
                ),)*
                _ => {}
            }
        };
    }
    known!(
        "invalid_id",
        "id_doesn't_exist",
        "invalid_action",
        "invalid_json",
        "invalid_from_date",
        "invalid_to_date",
        "invalid_date_range",
        "worker_unresponsive",
        "job_finished",
        "job_not_finished",
        "already_reverted",
        "not_revertible",
        "permission_denied",
        "invalid_rate",
        "no_output",
        "upload_incomplete",
        "storage_error",
        "storage_unavailable",
        "internal",
        "bad_request",
        "daemon_unavailable",
        "File not accepted",
    );
    let mut s = String::with_capacity(code.len() + 16);
    s.push_str("{\"errorType\":");
    go_json_string(&mut s, code);
    s.push('}');
    Bytes::from(s)
}

/// `{"<key>":"<value>"}`, as Go marshals a one-entry `gin.H`.
pub fn one_field(key: &str, value: &str) -> Bytes {
    let mut s = String::with_capacity(key.len() + value.len() + 8);
    s.push('{');
    go_json_string(&mut s, key);
    s.push(':');
    go_json_string(&mut s, value);
    s.push('}');
    Bytes::from(s)
}

/// Appends `s` as a JSON string the way Go's `encoding/json` writes it: `<`, `>`,
/// `&`, U+2028 and U+2029 escaped as `\u00XX`/`\u20XX`, control characters as
/// `\n`, `\r`, `\t` or `\u00XX`.
pub fn go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Which family of routes an error is answered for: the legacy routes keep the old
/// service's statuses; the new read routes use finer ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    Legacy,
    Jobs,
}

/// The status and code answering a refusal of the daemon.
pub fn daemon_error(routes: Routes, code: ErrorCode) -> (StatusCode, &'static str) {
    use ErrorCode::*;
    let legacy = routes == Routes::Legacy;
    match code {
        InvalidId | InvalidAction | InvalidJson | InvalidFromDate | InvalidToDate
        | InvalidDateRange | InvalidRate | BadRequest => (StatusCode::BAD_REQUEST, code.as_str()),
        IdDoesntExist => (StatusCode::NOT_FOUND, code.as_str()),
        // The legacy route never tells whose a job is, nor that it has ended: to it,
        // such a job does not exist (the original answered so for finished jobs).
        PermissionDenied | JobFinished if legacy => (StatusCode::NOT_FOUND, IdDoesntExist.as_str()),
        PermissionDenied => (StatusCode::FORBIDDEN, code.as_str()),
        JobFinished | NoOutput | JobNotFinished | AlreadyReverted | NotRevertible => {
            (StatusCode::CONFLICT, code.as_str())
        }
        UploadIncomplete => (StatusCode::PAYLOAD_TOO_LARGE, code.as_str()),
        WorkerUnresponsive if legacy => (StatusCode::INTERNAL_SERVER_ERROR, code.as_str()),
        WorkerUnresponsive => (StatusCode::GATEWAY_TIMEOUT, code.as_str()),
        ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, DAEMON_UNAVAILABLE),
        StorageError | Internal => (StatusCode::INTERNAL_SERVER_ERROR, code.as_str()),
        StorageUnavailable => (StatusCode::SERVICE_UNAVAILABLE, code.as_str()),
        FrameTooLarge | UnsupportedProtocol => (StatusCode::BAD_GATEWAY, code.as_str()),
    }
}

/// The answer to a failed conversation with the daemon.
pub fn client_error(routes: Routes, e: &ClientError) -> Response {
    let (status, body) = client_error_parts(routes, e);
    json(status, body)
}

/// The status and JSON body of [`client_error`].
pub fn client_error_parts(routes: Routes, e: &ClientError) -> (StatusCode, Bytes) {
    let (status, code) = match e {
        ClientError::Daemon { code, .. } => daemon_error(routes, *code),
        e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, DAEMON_UNAVAILABLE),
        e => {
            tracing::warn!(error = %e, "unexpected conversation with the daemon");
            (StatusCode::BAD_GATEWAY, ErrorCode::Internal.as_str())
        }
    };
    (status, error_body(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        let mut out = String::new();
        go_json_string(&mut out, v);
        out
    }

    #[test]
    fn go_escaping() {
        assert_eq!(s("Job a-b-1-2 stopped."), "\"Job a-b-1-2 stopped.\"");
        assert_eq!(s("id_doesn't_exist"), "\"id_doesn't_exist\"");
        assert_eq!(s("<a&b>"), "\"\\u003ca\\u0026b\\u003e\"");
        assert_eq!(s("\"\\\n\u{1}\u{2028}é"), "\"\\\"\\\\\\n\\u0001\\u2028é\"");
    }

    #[test]
    fn static_and_dynamic_bodies_agree() {
        for code in ["id_doesn't_exist", "File not accepted", "invalid_id"] {
            let dynamic = format!("{{\"errorType\":{}}}", s(code));
            assert_eq!(error_body(code), dynamic.as_bytes());
        }
        assert_eq!(
            error_body("x<y"),
            "{\"errorType\":\"x\\u003cy\"}".as_bytes()
        );
        assert_eq!(
            one_field("Job ID", "u-bulkTeam-1-2"),
            "{\"Job ID\":\"u-bulkTeam-1-2\"}".as_bytes()
        );
    }

    #[test]
    fn legacy_statuses() {
        use ErrorCode::*;
        let l = |c| daemon_error(Routes::Legacy, c);
        assert_eq!(
            l(IdDoesntExist),
            (StatusCode::NOT_FOUND, "id_doesn't_exist")
        );
        assert_eq!(l(JobFinished), (StatusCode::NOT_FOUND, "id_doesn't_exist"));
        assert_eq!(
            l(PermissionDenied),
            (StatusCode::NOT_FOUND, "id_doesn't_exist")
        );
        assert_eq!(
            l(InvalidAction),
            (StatusCode::BAD_REQUEST, "invalid_action")
        );
        assert_eq!(
            l(ShuttingDown),
            (StatusCode::SERVICE_UNAVAILABLE, "daemon_unavailable")
        );
        let j = |c| daemon_error(Routes::Jobs, c);
        assert_eq!(
            j(PermissionDenied),
            (StatusCode::FORBIDDEN, "permission_denied")
        );
        assert_eq!(j(JobFinished), (StatusCode::CONFLICT, "job_finished"));
        assert_eq!(j(NoOutput), (StatusCode::CONFLICT, "no_output"));
    }
}
