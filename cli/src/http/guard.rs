//! What every request passes before its route: the host it names, where it comes
//! from, and who sends it.
//!
//! - **Host** (loopback without tokens only): a browser page on another site
//!   can make its name resolve to 127.0.0.1 (DNS rebinding) and then talk to us
//!   "same-origin"; so, unless tokens protect the routes or `--insecure-listen`
//!   was given, a request from a browser (it has `Origin` or `Sec-Fetch-Site`,
//!   which browsers send) must name a loopback host or one of `--allow-host`
//!   (403 `invalid_host`). Other clients (curl, scripts, the legacy API's
//!   clients) are not browsers and are served whatever `Host` they send.
//! - **Origin**: a request that changes state (any method but GET and HEAD, and
//!   the legacy `GET /updateTask`) sent by a page of another site — its `Origin`
//!   names another host than `Host`, or `Sec-Fetch-Site` says `cross-site` or
//!   `same-site` — is refused with 403 `cross_origin` before anything happens.
//!   Requests without these headers (curl, scripts) pass.
//! - **Tokens** (`--token-file`, see [`super::auth`]): every route but `/healthz`,
//!   the dashboard's assets and its login form needs a bearer token or a session
//!   cookie; else 401 `unauthorized` (the dashboard's pages show the login form).

use super::reply;
use super::{ui, Shared};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

pub async fn guard(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if app.loopback_only && from_browser(headers) && !host_allowed(headers, &app.allowed_hosts) {
        return reply::error(StatusCode::FORBIDDEN, "invalid_host");
    }
    if changes_state(req.method(), req.uri().path()) && cross_site(headers) {
        return reply::error(StatusCode::FORBIDDEN, "cross_origin");
    }
    if let Some(auth) = &app.auth {
        let path = req.uri().path();
        let open = is_public(req.method(), path);
        let allowed = open
            || headers
                .get(AUTHORIZATION)
                .is_some_and(|v| auth.check_bearer(v.as_bytes()))
            || headers
                .get_all(COOKIE)
                .iter()
                .any(|v| auth.check_session(v.as_bytes()));
        if !allowed {
            return unauthorized(req.method(), path);
        }
    }
    next.run(req).await
}

/// Routes served without a token: the health check, and what the login page needs.
fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET && (path == "/healthz" || path.starts_with("/ui/assets/")))
        || (method == Method::POST && path == "/ui/login")
}

/// 401: the login form for the dashboard's pages, JSON elsewhere.
fn unauthorized(method: &Method, path: &str) -> Response {
    let mut resp = if method == Method::GET && (path == "/ui" || path.starts_with("/ui/")) {
        ui::login_page(StatusCode::UNAUTHORIZED, path, false)
    } else {
        reply::error(StatusCode::UNAUTHORIZED, "unauthorized")
    };
    resp.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"jobd-http\""),
    );
    resp
}

/// Requests that change something: every method but GET and HEAD, and the
/// legacy `GET /updateTask` (the old service's control route).
pub fn changes_state(method: &Method, path: &str) -> bool {
    !(method == Method::GET || method == Method::HEAD) || path == "/updateTask"
}

/// Sent by a page of another site (or of another port of this host)?
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(origin) = headers.get(ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return true;
        };
        // `null` comes from sandboxed frames, files and the like: not us.
        let Some((_, authority)) = origin.split_once("://") else {
            return true;
        };
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        return !host.is_some_and(|h| h.eq_ignore_ascii_case(authority));
    }
    matches!(
        headers.get("sec-fetch-site").map(|v| v.as_bytes()),
        Some(b"cross-site" | b"same-site")
    )
}

/// Sent by a browser? Browsers add `Sec-Fetch-Site` to every request (and
/// `Origin` to most); other clients do not.
pub fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key("sec-fetch-site") || headers.contains_key(ORIGIN)
}

/// A `Host` naming this machine's loopback (any port) or an allowed name.
pub fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    is_loopback_name(host)
        || allowed
            .iter()
            .any(|a| host.eq_ignore_ascii_case(a) || strip_port(host).eq_ignore_ascii_case(a))
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }
        _ => host,
    }
}

pub fn is_loopback_name(host: &str) -> bool {
    // Strip the port: `[::1]:8081`, `localhost:8081`, `127.0.0.1`.
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, _)) => inner,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins() {
        let same = [
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:8081"),
        ];
        assert!(!cross_site(&headers(&same)));
        assert!(!cross_site(&headers(&[("host", "a:1")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "none")])));
        for bad in [
            &[
                ("host", "127.0.0.1:8081"),
                ("origin", "http://evil.example"),
            ][..],
            &[
                ("host", "127.0.0.1:8081"),
                ("origin", "http://127.0.0.1:3000"),
            ],
            &[("host", "127.0.0.1:8081"), ("origin", "null")],
            &[("origin", "http://127.0.0.1:8081")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
        ] {
            assert!(cross_site(&headers(bad)), "{bad:?}");
        }
        assert!(changes_state(&Method::POST, "/jobs"));
        assert!(changes_state(&Method::GET, "/updateTask"));
        assert!(!changes_state(&Method::GET, "/jobs"));
    }

    #[test]
    fn hosts() {
        let allowed = vec!["jobs.example".to_string()];
        let h = |v: &'static str| headers(&[("host", v)]);
        assert!(host_allowed(&h("127.0.0.1:8081"), &allowed));
        assert!(host_allowed(&h("jobs.example"), &allowed));
        assert!(host_allowed(&h("jobs.example:443"), &allowed));
        assert!(!host_allowed(&h("evil.example:8081"), &allowed));
        assert!(!host_allowed(&HeaderMap::new(), &allowed));
        assert!(from_browser(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!from_browser(&h("a")));
    }

    #[test]
    fn loopback_names() {
        for ok in [
            "localhost",
            "LOCALHOST:80",
            "127.0.0.1:8081",
            "127.1.2.3",
            "[::1]:8081",
        ] {
            assert!(is_loopback_name(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8081",
            "10.0.0.1",
            "[::2]:1",
            "[::1",
        ] {
            assert!(!is_loopback_name(bad), "{bad}");
        }
    }
}
