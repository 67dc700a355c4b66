//! The dashboard: `/ui/` (the job list) and `/ui/jobs/{id}` (one job), rendered
//! on the server with askama templates (checked at compile time, every value
//! HTML-escaped), kept live in the browser by `assets/app.js` from `/events`.
//! Controls and submits go through the JSON routes (`POST /jobs`,
//! `POST /jobs/{id}/{action}`); without JavaScript the pages still read, and
//! the forms still post.
//!
//! Every answer here carries a Content-Security-Policy that allows scripts,
//! styles and connections from this origin only (no inline script at all), and
//! the assets are embedded in the binary.

mod view;

pub use view::path_segment;

use super::query;
use super::Shared;
use askama::Template;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use jobd_protocol::{ClientError, JobInfo, JobKind, JobState, RowError};
use std::sync::LazyLock;
use view::JobView;

/// Jobs per page of the list, by default and at most.
pub const PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 200;
/// Row errors per page of a job.
pub const ERRORS_PAGE: u32 = 50;
/// Pages past this are not served (a bound on the query, not on the jobs).
const MAX_PAGE: usize = 100_000;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

const JS: &str = include_str!("assets/app.js");
const CSS: &str = include_str!("assets/app.css");

/// Asset names carry a hash of their content, so they can be cached for good.
struct Assets {
    js: String,
    css: String,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    js: format!("/ui/assets/app-{:016x}.js", fnv(JS.as_bytes())),
    css: format!("/ui/assets/app-{:016x}.css", fnv(CSS.as_bytes())),
});

/// The script's path (for tests of the route table).
#[cfg(test)]
pub fn script_path() -> &'static str {
    &ASSETS.js
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What every page shows around its content.
pub struct Chrome {
    pub css: &'static str,
    pub js: &'static str,
    pub logout: bool,
    pub daemon_down: bool,
    pub notice: Option<String>,
}

impl Chrome {
    fn new(app: &super::App, daemon_down: bool, notice: Option<String>) -> Chrome {
        Chrome {
            css: &ASSETS.css,
            js: &ASSETS.js,
            logout: app.auth.is_some(),
            daemon_down,
            notice,
        }
    }
}

pub struct Opt {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    chrome: Chrome,
    jobs: Vec<JobView>,
    filtered: bool,
    matching: usize,
    state_options: Vec<Opt>,
    kind_options: Vec<Opt>,
    filter_state: &'static str,
    filter_kind: &'static str,
    /// The list's query (filters, page), for the rows' live refresh.
    query: String,
    page: usize,
    pages: usize,
    newer: Option<String>,
    older: Option<String>,
}

#[derive(Template)]
#[template(path = "rows_fragment.html")]
struct Rows {
    jobs: Vec<JobView>,
    filtered: bool,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    j: JobView,
    errors: Vec<RowError>,
    after: u64,
    errors_next: Option<u64>,
    confirm_terminate: bool,
    confirm_revert: bool,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    failed: bool,
}

const STATES: [JobState; 7] = JobState::all();

/// The list's query string: filters and page, each validated.
struct ListQuery {
    state: Option<JobState>,
    kind: Option<JobKind>,
    page: usize,
    per: usize,
}

impl ListQuery {
    fn parse(raw: Option<&str>) -> ListQuery {
        let get = |k| query::first(raw, k).map(|v| v.trim().to_string());
        let number = |k, default: usize, max: usize| {
            get(k)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(default)
                .clamp(1, max)
        };
        ListQuery {
            state: get("state").and_then(|s| s.parse().ok()),
            kind: get("kind").and_then(|k| k.parse().ok()),
            page: number("page", 1, MAX_PAGE),
            per: number("per", PAGE_SIZE, MAX_PAGE_SIZE),
        }
    }

    fn href(&self, page: usize) -> String {
        let mut q = Vec::new();
        if let Some(s) = self.state {
            q.push(format!("state={s}"));
        }
        if let Some(k) = self.kind {
            q.push(format!("kind={k}"));
        }
        if self.per != PAGE_SIZE {
            q.push(format!("per={}", self.per));
        }
        if page != 1 {
            q.push(format!("page={page}"));
        }
        q.join("&")
    }

    /// Newest first, filtered, this page of it; and how many matched.
    fn select(&self, mut jobs: Vec<JobInfo>) -> (Vec<JobView>, usize) {
        jobs.retain(|j| {
            self.state.is_none_or(|s| s == j.state) && self.kind.is_none_or(|k| k == j.kind)
        });
        jobs.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        let matching = jobs.len();
        let start = (self.page - 1).saturating_mul(self.per);
        let page = jobs
            .iter()
            .skip(start)
            .take(self.per)
            .map(JobView::new)
            .collect();
        (page, matching)
    }
}

/// `GET /ui/`: the job list.
pub async fn list(State(app): State<Shared>, uri: Uri) -> Response {
    let q = ListQuery::parse(uri.query());
    let notice = query::first(uri.query(), "error").map(|c| notice(&c));
    let (jobs, down) = match app.pool.status(&[]).await {
        Ok(jobs) => (jobs, false),
        Err(e) if e.is_unavailable() => (Vec::new(), true),
        Err(e) => return error_page(&app, &e),
    };
    let (rows, matching) = q.select(jobs);
    let pages = matching.div_ceil(q.per).max(1);
    let link = |p: usize| {
        let h = q.href(p);
        if h.is_empty() {
            "/ui/".to_string()
        } else {
            format!("/ui/?{h}")
        }
    };
    let page = ListPage {
        chrome: Chrome::new(&app, down, notice),
        filtered: q.state.is_some() || q.kind.is_some(),
        matching,
        state_options: std::iter::once(Opt {
            value: "",
            label: "any",
            selected: q.state.is_none(),
        })
        .chain(STATES.iter().map(|s| Opt {
            value: s.as_str(),
            label: s.as_str(),
            selected: q.state == Some(*s),
        }))
        .collect(),
        kind_options: std::iter::once(Opt {
            value: "",
            label: "any",
            selected: q.kind.is_none(),
        })
        .chain(JobKind::all().into_iter().map(|k| Opt {
            value: k.as_str(),
            label: view::kind_label(k),
            selected: q.kind == Some(k),
        }))
        .collect(),
        filter_state: q.state.map_or("", JobState::as_str),
        filter_kind: q.kind.map_or("", JobKind::as_str),
        query: q.href(q.page),
        newer: (q.page > 1).then(|| link(q.page - 1)),
        older: (q.page < pages).then(|| link(q.page + 1)),
        page: q.page,
        pages,
        jobs: rows,
    };
    let status = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    html(status, page.render())
}

/// `GET /ui/rows`: the list's rows alone, for the page to refresh them after a gap.
pub async fn rows(State(app): State<Shared>, uri: Uri) -> Response {
    let q = ListQuery::parse(uri.query());
    match app.pool.status(&[]).await {
        Ok(jobs) => {
            let (jobs, _) = q.select(jobs);
            let rows = Rows {
                jobs,
                filtered: q.state.is_some() || q.kind.is_some(),
            };
            html(StatusCode::OK, rows.render())
        }
        Err(e) => super::reply::client_error(super::reply::Routes::Jobs, &e),
    }
}

/// `GET /ui/jobs/{id}`: one job, a page of its row errors (`?after=ROW`).
pub async fn job(State(app): State<Shared>, Path(id): Path<String>, uri: Uri) -> Response {
    let raw = uri.query();
    let after = query::first(raw, "after")
        .and_then(|a| a.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let notice = query::first(raw, "error").map(|c| notice(&c));
    let confirm = query::first(raw, "confirm");
    let confirm_terminate = confirm.as_deref() == Some("terminate");
    let confirm_revert = confirm.as_deref() == Some("revert");
    let ids = [id.clone()];
    let info = match app.pool.status(&ids).await {
        Ok(jobs) => match jobs.into_iter().next() {
            Some(j) => j,
            None => return not_found(&app),
        },
        Err(e) if e.code() == Some(jobd_protocol::ErrorCode::IdDoesntExist) => {
            return not_found(&app)
        }
        Err(e) => return error_page(&app, &e),
    };
    let errors = match app.pool.errors_page(&id, after, ERRORS_PAGE).await {
        Ok(e) => e,
        Err(e) => return error_page(&app, &e),
    };
    let errors_next = (errors.len() == ERRORS_PAGE as usize)
        .then(|| errors.last().map(|e| e.row))
        .flatten();
    let page = JobPage {
        chrome: Chrome::new(&app, false, notice),
        j: JobView::new(&info),
        errors,
        after,
        errors_next,
        confirm_terminate,
        confirm_revert,
    };
    html(StatusCode::OK, page.render())
}

/// `GET /ui`: to `/ui/`.
pub async fn to_list() -> Response {
    see_other("/ui/", StatusCode::MOVED_PERMANENTLY)
}

/// `GET /ui/assets/{name}`: the embedded script and style sheet.
pub async fn asset(Path(name): Path<String>) -> Response {
    let path = format!("/ui/assets/{name}");
    let (body, kind) = if path == ASSETS.js {
        (JS, "text/javascript; charset=utf-8")
    } else if path == ASSETS.css {
        (CSS, "text/css; charset=utf-8")
    } else {
        return secure(super::reply::not_found());
    };
    let mut resp = super::reply::with_type(StatusCode::OK, kind, body);
    resp.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    secure(resp)
}

/// `POST /ui/login` (form: `token`, `next`): checks the token; a session cookie
/// and on to `next` (a dashboard page) if it is one, the form again if not.
pub async fn login(State(app): State<Shared>, body: axum::body::Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let next = query::first(Some(&text), "next")
        .filter(|n| n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\'))
        .map_or_else(|| "/ui/".to_string(), |n| n.into_owned());
    let Some(auth) = &app.auth else {
        return see_other(&next, StatusCode::SEE_OTHER);
    };
    let token = query::first(Some(&text), "token").unwrap_or_default();
    if !auth.check_token(token.trim().as_bytes()) {
        return login_page(StatusCode::UNAUTHORIZED, &next, true);
    }
    let Ok(session) = auth.new_session() else {
        return super::reply::error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    };
    let mut resp = see_other(&next, StatusCode::SEE_OTHER);
    if let Ok(v) = HeaderValue::from_str(&super::auth::session_cookie(&session)) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/logout`: ends the session.
pub async fn logout(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(auth) = &app.auth {
        for c in headers.get_all(COOKIE) {
            auth.end_session(c.as_bytes());
        }
    }
    let mut resp = see_other("/ui/", StatusCode::SEE_OTHER);
    if let Ok(v) = HeaderValue::from_str(&super::auth::cleared_cookie()) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    resp
}

/// The login form, with `status` (401 when a page was asked for without a session).
pub fn login_page(status: StatusCode, next: &str, failed: bool) -> Response {
    let page = LoginPage {
        chrome: Chrome {
            css: &ASSETS.css,
            js: &ASSETS.js,
            logout: false,
            daemon_down: false,
            notice: None,
        },
        next: if next.starts_with("/ui/") {
            next.to_string()
        } else {
            "/ui/".to_string()
        },
        failed,
    };
    html(status, page.render())
}

fn not_found(app: &super::App) -> Response {
    let page = ErrorPage {
        chrome: Chrome::new(app, false, None),
        title: "No such job",
        message: "There is no job with this id (or it is not yours).".into(),
    };
    html(StatusCode::NOT_FOUND, page.render())
}

#[derive(Template)]
#[template(
    source = "{% extends \"base.html\" %}{% block title %}{{ title }} · jobd{% endblock %}\
              {% block main %}<h1>{{ title }}</h1><p>{{ message }}</p>\
              <p><a href=\"/ui/\">All jobs</a></p>{% endblock %}",
    ext = "html"
)]
struct ErrorPage {
    chrome: Chrome,
    title: &'static str,
    message: String,
}

fn error_page(app: &super::App, e: &ClientError) -> Response {
    let (status, _) = super::reply::client_error_parts(super::reply::Routes::Jobs, e);
    let down = e.is_unavailable();
    let page = ErrorPage {
        chrome: Chrome::new(app, down, None),
        title: if down {
            "The daemon is unavailable"
        } else {
            "The daemon refused"
        },
        message: if down {
            "jobd does not answer right now; try again in a moment.".into()
        } else {
            format!("{}.", error_code(e))
        },
    };
    html(status, page.render())
}

/// A rendered page, with the dashboard's headers.
fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    match rendered {
        Ok(body) => secure(super::reply::with_type(
            status,
            "text/html; charset=utf-8",
            body,
        )),
        Err(e) => {
            tracing::error!("cannot render a page: {e}");
            secure(super::reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ))
        }
    }
}

/// Adds the dashboard's security headers.
pub fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn see_other(location: &str, status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    secure(resp)
}

/// Does the client want a page (a browser form posted without JavaScript)?
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// To a job's page, telling of an error if there was one.
pub fn see_job(id: &str, error: Option<&str>) -> Response {
    let mut to = format!("/ui/jobs/{}", path_segment(id));
    if let Some(code) = error {
        to.push_str(&format!("?error={}", path_segment(code)));
    }
    see_other(&to, StatusCode::SEE_OTHER)
}

/// To the list, telling of an error if there was one.
pub fn see_list(error: Option<&str>) -> Response {
    let to = match error {
        Some(code) => format!("/ui/?error={}", path_segment(code)),
        None => "/ui/".to_string(),
    };
    see_other(&to, StatusCode::SEE_OTHER)
}

/// The code a refusal is shown with.
pub fn error_code(e: &ClientError) -> &'static str {
    match e {
        ClientError::Daemon { code, .. } => code.as_str(),
        e if e.is_unavailable() => super::reply::DAEMON_UNAVAILABLE,
        _ => "internal",
    }
}

/// A sentence for an error code passed back to a page (only known codes are named).
fn notice(code: &str) -> String {
    let known = match code {
        "job_finished" => "The job has already ended.",
        "already_reverted" => "The job was already reverted.",
        "job_not_finished" => {
            "Only a finished job can be reverted; terminate rolls back one that runs."
        }
        "not_revertible" => "This job has nothing to revert.",
        "worker_unresponsive" => "The job did not stop within 5 seconds.",
        "daemon_unavailable" => "The daemon is unavailable; nothing was done.",
        "storage_unavailable" => "The store is unavailable; nothing was done.",
        "invalid_from_date" => "From is not a valid date.",
        "invalid_to_date" => "To is not a valid date.",
        "invalid_date_range" => "From is after To.",
        "invalid_rate" => "The rate must be a positive number.",
        "bad_request" => "The form was incomplete.",
        _ => "",
    };
    if known.is_empty() {
        "The request was refused.".to_string()
    } else {
        known.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_are_bounded() {
        let q = ListQuery::parse(Some("state=paused&kind=bulkTeam&page=0&per=100000"));
        assert_eq!(q.state, Some(JobState::Paused));
        assert_eq!(q.kind, Some(JobKind::BulkTeam));
        assert_eq!((q.page, q.per), (1, MAX_PAGE_SIZE));
        let q = ListQuery::parse(Some("state=%3Cscript%3E&page=99999999999"));
        assert_eq!((q.state, q.page), (None, MAX_PAGE));
        assert_eq!(
            ListQuery::parse(Some("kind=bulkTeam&page=2")).href(3),
            "kind=bulkTeam&page=3"
        );
    }

    /// Values are escaped by the templates, in text and in attributes.
    #[test]
    fn rows_escape_what_users_wrote() {
        let info = JobInfo {
            id: "<img src=x onerror=alert(1)>\"-bulkTeam-1-2".into(),
            kind: JobKind::BulkTeam,
            state: JobState::Failed,
            owner: "x".into(),
            owner_uid: 1,
            processed: 0,
            failed: 0,
            total: None,
            created_at: 0,
            updated_at: 0,
            error: Some("<script>alert(2)</script>".into()),
            rate: None,
            node: None,
        };
        let rows = Rows {
            jobs: vec![JobView::new(&info)],
            filtered: false,
        }
        .render()
        .expect("renders");
        assert!(!rows.contains("<img"), "{rows}");
        assert!(
            rows.contains("&#60;img src=x onerror=alert(1)&#62;&#34;"),
            "{rows}"
        );
    }
}
