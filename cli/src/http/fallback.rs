//! What Gin answered for a request no route takes: a path that exists only
//! without its trailing slash, for this method, is redirected there (301 for GET,
//! with Go's little HTML body; 307 with an empty body otherwise), the query kept;
//! anything else is `404 page not found` in `text/plain`.

use super::reply;
use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

/// Every route, by method and path pattern (`{x}` matches one non-empty segment).
/// `super::router` must serve exactly these.
pub const ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/uploadCSV"),
    (Method::POST, "/createBulkTeam"),
    (Method::POST, "/exportData"),
    (Method::GET, "/updateTask"),
    (Method::GET, "/jobs"),
    (Method::GET, "/jobs/{id}"),
    (Method::GET, "/jobs/{id}/events"),
    (Method::GET, "/jobs/{id}/output"),
    (Method::GET, "/jobs/{id}/errors"),
    (Method::GET, "/healthz"),
    (Method::POST, "/jobs"),
    (Method::POST, "/jobs/{id}/stop"),
    (Method::POST, "/jobs/{id}/start"),
    (Method::POST, "/jobs/{id}/terminate"),
    (Method::POST, "/jobs/{id}/revert"),
    (Method::GET, "/events"),
    (Method::GET, "/metrics"),
    (Method::GET, "/ui"),
    (Method::GET, "/ui/"),
    (Method::GET, "/ui/rows"),
    (Method::GET, "/ui/jobs/{id}"),
    (Method::GET, "/ui/assets/{name}"),
    (Method::POST, "/ui/login"),
    (Method::POST, "/ui/logout"),
];

/// The router's fallback.
pub async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() && routed(&method, stripped) => {
            redirect(&method, stripped, uri.query())
        }
        _ => reply::not_found(),
    }
}

/// A wrong method on an existing path: Gin answered 404, not 405.
pub async fn wrong_method() -> Response {
    reply::not_found()
}

/// Does a route serve `method` on `path`?
pub fn routed(method: &Method, path: &str) -> bool {
    ROUTES
        .iter()
        .any(|(m, pattern)| m == method && matches(pattern, path))
}

fn matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => {}
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// Go's `http.Redirect`, as Gin's trailing-slash redirect called it.
fn redirect(method: &Method, path: &str, query: Option<&str>) -> Response {
    let mut target = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(path);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    let Ok(location) = HeaderValue::from_str(&target) else {
        return reply::not_found();
    };
    let mut resp = if method == Method::GET {
        let body = format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            html_escape(&target)
        );
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp
    } else {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        resp
    };
    resp.headers_mut().insert(LOCATION, location);
    resp
}

/// Go's `html.EscapeString` as `http.Redirect` uses it.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table() {
        assert!(routed(&Method::GET, "/updateTask"));
        assert!(!routed(&Method::POST, "/updateTask"));
        assert!(!routed(&Method::HEAD, "/updateTask"));
        assert!(routed(&Method::POST, "/exportData"));
        assert!(routed(&Method::GET, "/jobs/a-b-1-2"));
        assert!(routed(&Method::GET, "/jobs/x/events"));
        assert!(!routed(&Method::GET, "/jobs/"));
        assert!(!routed(&Method::GET, "/jobs/x/nope"));
        assert!(!routed(&Method::GET, "/updateTask/"));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("/updateTask?id=x&action=stop"),
            "/updateTask?id=x&amp;action=stop"
        );
        assert_eq!(html_escape("<'\">"), "&lt;&#39;&#34;&gt;");
    }
}

#[cfg(test)]
mod openapi {
    use super::ROUTES;

    /// `docs/openapi.yaml` documents every route, with its method.
    #[test]
    fn every_route_is_documented() {
        let doc = include_str!("../../../docs/openapi.yaml");
        for (method, path) in ROUTES {
            let at = doc
                .find(&format!("\n  {path}:\n"))
                .unwrap_or_else(|| panic!("{path} is not in docs/openapi.yaml"));
            let rest = &doc[at + path.len() + 4..];
            let section = rest.split("\n  /").next().unwrap_or(rest);
            let key = format!("\n    {}:", method.as_str().to_ascii_lowercase());
            assert!(section.contains(&key), "{method} {path} is not documented");
        }
    }
}
